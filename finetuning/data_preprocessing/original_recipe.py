"""The original WhisperSG data recipe in one command (run with --help). The logic lives in whispersg.finetune; this is a launcher."""

from whispersg.cli.finetune import original_recipe_main

if __name__ == "__main__":
    raise SystemExit(original_recipe_main())
