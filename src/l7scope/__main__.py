from l7scope.cli import main

main()
