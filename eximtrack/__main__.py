from eximtrack.cli import main

if __name__ == "__main__":  # not when a spawned child process (eximtrack/join_process.py) imports it
    raise SystemExit(main())
