#!/bin/sh
# Copies programs and exactly the shared libraries they load into a root
# folder for a FROM scratch image (the Dockerfile's build stage runs it):
#   deploy/runtime-files.sh OUT PROGRAM...
# Each library goes where the dynamic loader finds it (ldd's path, resolved
# through symlinks and /etc/alternatives), the loader itself too; the
# programs go to OUT/usr/local/bin. Nothing else: no shell, no package manager.
set -eu
out=$1
shift
mkdir -p "$out/usr/local/bin" "$out/tmp"
chmod 1777 "$out/tmp"
for program in "$@"; do
  cp "$program" "$out/usr/local/bin/"
  ldd "$program" | while read -r first second third _; do
    case "$first" in
      /*) path=$first ;;                  # the loader: /lib64/ld-linux-x86-64.so.2 (0x...)
      *) [ "$second" = "=>" ] && [ -n "$third" ] && [ "${third#/}" != "$third" ] && path=$third || continue ;;
    esac
    mkdir -p "$out$(dirname "$path")"
    cp -L "$path" "$out$path"
  done
done
