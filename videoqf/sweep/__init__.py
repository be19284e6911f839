"""The sweep: variants x seeds trained on one budget, costs measured side by side, and the report."""
