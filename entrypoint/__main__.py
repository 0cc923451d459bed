import sys

from entrypoint.main import main

sys.exit(main(sys.argv[1:]))
