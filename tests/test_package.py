import videoqf


def test_version_is_set():
    assert videoqf.__version__.count(".") == 2
