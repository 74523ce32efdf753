"""The HTTP/2 front end: the sans-IO session, its driver, and the streams it serves."""
