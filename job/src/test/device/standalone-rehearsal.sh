#!/usr/bin/env bash
# Rehearses gpu-standalone-run.sh on a machine without GPUs, against a runtime laid out like the packed one on the
# GPU host (shared/device/pack.sh + stage.sh): a jlink'ed Java 17 with pack.sh's modules, every Maven jar re-zipped
# without directory entries (what stage.sh does), an env.sh exporting JAVA_HOME, MOBA_CP and MOBA_JAVA_OPTS. Then
# runs the device script with MOBA_FAKE_GPUS=2: standalone master + worker, 2 executors with fake GPU addresses,
# every job end to end on the CPU backend, the closing table and its pinning checks.
#
# usage (project root, after ./mvnw -B -DskipTests install or at least compile of kernels and job):
#   bash job/src/test/device/standalone-rehearsal.sh          -> job/target/standalone-rehearsal/out/summary.txt
set -euo pipefail
root=$(cd "$(dirname "$0")/../../../.." && pwd)
dir=$root/job/target/standalone-rehearsal
mkdir -p "$dir"
cd "$root"
./mvnw -B -q -o -pl job dependency:build-classpath -Dmdep.outputFile="$dir/cp.txt" >/dev/null
base_jars=$(tr ':' '\n' < "$dir/cp.txt" | grep -v '/moba-kernels-' | sort)
key=$(echo "$base_jars" | xargs -n1 basename | sha256sum | cut -c1-16)
base=$dir/base-$key
if [ ! -f "$base/ready" ]; then
  rm -rf "$dir"/base-*; mkdir -p "$base/jars"
  modules=java.base,java.logging,java.management,java.naming,java.sql,java.xml,java.desktop,jdk.unsupported,java.security.jgss,java.security.sasl,java.scripting,java.instrument,jdk.management,java.net.http,jdk.zipfs,jdk.crypto.ec,java.compiler,java.rmi,jdk.security.auth,jdk.jfr
  jlink --add-modules "$modules" --strip-debug --no-header-files --no-man-pages --compress=2 --output "$base/jre" >/dev/null
  echo "$base_jars" | python3 -c '
import os, sys, zipfile
out = sys.argv[1]
for jar in sys.stdin.read().split():
    with zipfile.ZipFile(jar) as src, zipfile.ZipFile(os.path.join(out, os.path.basename(jar)), "w", zipfile.ZIP_STORED) as dst:
        names = [i for i in src.infolist() if not i.filename.endswith("/")]   # no directory entries, like stage.sh
        names.sort(key=lambda i: i.filename != "META-INF/MANIFEST.MF")
        for i in names:
            dst.writestr(i.filename, src.read(i.filename))
' "$base/jars"
  touch "$base/ready"
fi
opts=$(sed -n 's/^export MOBA_JAVA_OPTS="\(.*\)"$/\1/p' "$root/../shared/device/stage.sh" 2>/dev/null || true)
[ -n "$opts" ] || opts=$(sed -n 's:.*<spark.module.opens>\(.*\)</spark.module.opens>.*:\1:p' "$root/pom.xml")
cat > "$dir/env.sh" <<ENV
export JAVA_HOME=$base/jre
export PATH=$base/jre/bin:\$PATH
export MOBA_CP="$root/job/target/classes:$root/kernels/target/classes:$(ls "$base"/jars/*.jar | tr '\n' ':')"
export MOBA_JAVA_OPTS="$opts"
ENV
rm -rf "$dir/out"
OUT=$dir/out MOBA_ENV=$dir/env.sh MOBA_FAKE_GPUS=${MOBA_FAKE_GPUS:-2} MOBA_WORK=$dir/work \
    MOBA_MASTER_PORT=${MOBA_MASTER_PORT:-17077} bash "$root/job/src/test/device/gpu-standalone-run.sh"
