from k2.cli.main import main

main()
