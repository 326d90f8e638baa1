from gazeprep.cli import main

main()
