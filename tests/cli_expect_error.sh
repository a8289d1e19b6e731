#!/usr/bin/env bash
# Usage: cli_expect_error.sh SUBSTRING -- COMMAND...
# Passes when COMMAND exits non-zero without crashing (no signal), prints exactly one line on stderr,
# and that line contains SUBSTRING.
set -u
want="$1"; shift; [ "$1" = "--" ] && shift
err=$("$@" 2>&1 >/dev/null); code=$?
if [ $code -eq 0 ]; then echo "expected failure, got exit 0"; exit 1; fi
if [ $code -ge 128 ]; then echo "crashed with signal $((code-128)): $err"; exit 1; fi
lines=$(printf '%s\n' "$err" | grep -c .)
if [ "$lines" -ne 1 ]; then echo "expected one stderr line, got $lines:"; printf '%s\n' "$err"; exit 1; fi
case "$err" in *"$want"*) echo "ok: $err"; exit 0;; esac
echo "stderr does not mention '$want': $err"; exit 1
