from fambench.cli import main

main()
