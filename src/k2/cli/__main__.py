from k2.cli.entry import main

main()
