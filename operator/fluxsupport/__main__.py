from fluxsupport.cli import main

main()
