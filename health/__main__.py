import sys

from health.cli import main

sys.exit(main())
