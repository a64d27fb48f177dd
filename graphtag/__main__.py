import sys

from graphtag.cli import main

sys.exit(main())
