#!/usr/bin/env bash
# Entry point: ./submit.sh JOB [options]      (./submit.sh --help lists the jobs)
# Runs the MoBA command line on this machine from the project's own Maven-built classpath, building it first
# when needed. The Spark jobs (bench, sweep, score) will use $SPARK_HOME/bin/spark-submit when Spark is installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cp_file="$here/job/target/classpath.txt"
classes="$here/job/target/classes"

needs_build() {
  [ ! -f "$cp_file" ] || [ ! -d "$classes" ] && return 0
  # Rebuild when any source or pom is newer than the last build.
  [ -n "$(find "$here/kernels/src/main" "$here/job/src/main" "$here"/pom.xml "$here"/*/pom.xml -newer "$cp_file" -print -quit)" ]
}

if needs_build; then
  echo "submit.sh: building the project (first run or sources changed)..." >&2
  (cd "$here" && ./mvnw -B -q -ntp -DskipTests install >&2)
  (cd "$here" && ./mvnw -B -q -ntp -pl job dependency:build-classpath -Dmdep.includeScope=test \
      -Dmdep.outputFile="$cp_file" >&2)
fi

java_opts=$(sed -n 's:.*<spark.module.opens>\(.*\)</spark.module.opens>.*:\1:p' "$here/pom.xml")
exec java ${JAVA_OPTS:-} $java_opts -Dlog4j.configurationFile="$here/conf/log4j2.properties" -cp "$classes:$here/kernels/target/classes:$(cat "$cp_file")" org.moba.job.MobaCli "$@"
