from evallab.cli import main

main()
