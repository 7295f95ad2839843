from trainer_service.main import main

main()
