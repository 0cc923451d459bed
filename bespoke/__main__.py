from bespoke.cli import main

main()
