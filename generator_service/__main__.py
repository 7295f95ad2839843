from generator_service.main import main

main()
