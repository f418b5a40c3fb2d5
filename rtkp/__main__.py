import sys

from rtkp.cli import main

sys.exit(main())
