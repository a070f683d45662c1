from edgesdk.cli import main

main()
