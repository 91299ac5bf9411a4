from sdtool.cli.app import main

main()
