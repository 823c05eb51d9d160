"""`python -m serve.archiver`."""

import sys

from serve.archiver.cli import main

sys.exit(main())
