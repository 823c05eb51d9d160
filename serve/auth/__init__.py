"""Token authorization: the key file, the keys, and which paths and RPCs need none."""
