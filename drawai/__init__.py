"""The ``drawai`` command line: worker, api, up (the embedded stack) and demo."""
