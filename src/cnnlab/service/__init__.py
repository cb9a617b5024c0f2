"""The middle layer between ``analysis`` and ``apps``: what the front doors (CLI, notebook API, server) share."""
