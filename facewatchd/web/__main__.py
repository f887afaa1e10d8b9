"""`python -m facewatchd.web`: asks for a password and prints its hash, for `[web] password_hash`."""

import getpass

from facewatchd.web.auth import hash_password

if __name__ == "__main__":
    print(hash_password(getpass.getpass("password for the review page: ")))
