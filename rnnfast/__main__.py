import sys

from rnnfast.cli.main import main

sys.exit(main())
