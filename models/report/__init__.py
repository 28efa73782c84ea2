"""The quality report as read, torch-free: the summary verdicts and the HTML page (the API renders it)."""
