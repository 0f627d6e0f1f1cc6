import sys

from nwp500d.cli import main

sys.exit(main())
