#!/usr/bin/env bash
# Checks that deploy/image/Dockerfile's runtime stage installs every shared library the
# moondream-server binary loads: each `ldd` library must belong to a package that is
# listed in the runtime `apt-get install`, is a (recursive) dependency of one, or has
# Priority: required (present in debian:bookworm-slim).
# Usage: check_image_libs.sh SERVER_BIN DOCKERFILE
set -euo pipefail
bin="$1"; dockerfile="$2"
# Packages of the runtime stage: the apt-get install after "AS runtime".
mapfile -t listed < <(sed -n '/AS runtime/,$p' "$dockerfile" |
  sed -n '/apt-get install/,/&&/p' | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' |
  grep -vE '^(apt-get|install|update|rm|no-install-recommends|y|qq|-.*)$')
[ "${#listed[@]}" -gt 5 ] || { echo "could not read the runtime package list" >&2; exit 1; }
allowed="$(mktemp)"
{
  printf '%s\n' "${listed[@]}"
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${listed[@]}" 2>/dev/null | grep -v '^ ' | tr -d '<>'
  dpkg-query -W -f='${Package} ${Priority}\n' | awk '$2 == "required" {print $1}'
} | sed 's/:amd64$//' | sort -u > "$allowed"
# Owner package of every library (realpath, both usrmerge spellings), in one grep.
libs=$(ldd "$bin" | awk '/=> \// {print $3}' | xargs -n1 readlink -f | sort -u)
patterns="$(mktemp)"; owners="$(mktemp)"; trap 'rm -f "$allowed" "$patterns" "$owners"' EXIT
for lib in $libs; do echo "$lib"; echo "${lib#/usr}"; echo "/usr${lib#/usr}"; done | sort -u > "$patterns"
grep -HxF -f "$patterns" /var/lib/dpkg/info/*.list |
  sed -E 's#^/var/lib/dpkg/info/([^:]+)(:[a-z0-9]+)?\.list:#\1 #' > "$owners"
missing=0
for lib in $libs; do
  pkg=$(awk -v a="$lib" -v b="${lib#/usr}" -v c="/usr${lib#/usr}" '$2 == a || $2 == b || $2 == c {print $1; exit}' "$owners")
  if [ -z "$pkg" ]; then
    echo "FAIL $lib: belongs to no package"; missing=$((missing + 1))
  elif ! grep -qx "$pkg" "$allowed"; then
    echo "FAIL $lib: package $pkg is not installed by the runtime stage"; missing=$((missing + 1))
  fi
done
echo "$(echo "$libs" | wc -l) libraries checked against ${#listed[@]} runtime packages + dependencies"
[ "$missing" -eq 0 ]
