from prompt_service.main import main

main()
