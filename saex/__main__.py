import sys

from saex.cli import main

sys.exit(main())
