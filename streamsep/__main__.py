from streamsep.cli import main

main()
