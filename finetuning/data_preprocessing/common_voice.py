"""Common Voice → interchange files (run with --help). The logic lives in whispersg.finetune; this is a launcher."""

from whispersg.cli.finetune import common_voice_main

if __name__ == "__main__":
    raise SystemExit(common_voice_main())
