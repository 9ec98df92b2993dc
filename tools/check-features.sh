#!/usr/bin/env bash
# Lists the crates whose features differ between `cargo build -p <member>` and `cargo test
# --workspace`: each such crate (and everything above it) is compiled twice when you run,
# then test. Empty output means every build shares one copy. Fix a line by adding the
# crate with the missing features to workspace-hack/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree "$@" --prefix none -f '{p}|{f}' 2>/dev/null | sed 's/ (\*)//g' | sort -u; }
all="$(tree --workspace -e normal,build,dev)"
status=0
# `normal,build`: `cargo build -p <member>`; `normal,build,dev`: `cargo build -p <member>
# --tests`, which is how the tests build another member's binary (testkit::workspace_bin).
for member in auth-service resource-service-example user-service-example; do
  for edges in normal,build normal,build,dev; do
    while IFS= read -r line; do
      if ! grep -qxF -- "$line" <<<"$all"; then
        echo "$member ($edges): ${line%%|*} has features [${line#*|}]; the test build: [$(grep -F -- "${line%%|*}|" <<<"$all" | cut -d'|' -f2 | paste -sd' ')]"
        status=1
      fi
    done < <(tree -p "$member" -e "$edges")
  done
done
exit $status
