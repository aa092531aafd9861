#!/usr/bin/env bash
# Entry point: ./submit.sh JOB [options]        (./submit.sh --help lists the jobs, ./submit.sh JOB --help explains one)
#
# With Spark installed ($SPARK_HOME set), the job goes through $SPARK_HOME/bin/spark-submit with the shaded jar;
# Spark settings (--master, --conf, ...) go in SPARK_SUBMIT_OPTS_MOBA, e.g.
#   SPARK_SUBMIT_OPTS_MOBA="--master spark://host:7077 --properties-file conf/spark-defaults.conf" ./submit.sh bench
# (conf/spark-defaults.conf: your copy of conf/spark-defaults.conf.template).
# Exit codes: 0 ok, 1 checks failed (sweep), 2 usage, 3 bad input, 4 crashed, 130 interrupted (./submit.sh JOB --help).
# Without Spark, the embedded default runs: Spark local[*] from the project's own Maven-built classpath.
# Either way the project is built first when it has not been, or its sources changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cp_file="$here/job/target/classpath.txt"
shaded="$here/job/target/moba-job-0.1.0-SNAPSHOT-all.jar"

needs_build() {
  if [ ! -f "$cp_file" ] || [ ! -f "$shaded" ]; then return 0; fi
  [ -n "$(find "$here/kernels/src/main" "$here/job/src/main" "$here"/pom.xml "$here"/*/pom.xml \
      -newer "$cp_file" -print -quit)" ]
}

if needs_build; then
  echo "submit.sh: building the project (first run or sources changed)..." >&2
  (cd "$here" && ./mvnw -B -q -ntp -DskipTests install >&2)
  (cd "$here" && ./mvnw -B -q -ntp -pl job dependency:build-classpath -DincludeScope=test \
      -Dmdep.outputFile="$cp_file" >&2)
  touch "$cp_file"  # the build's mark: the plugin leaves an unchanged classpath file as it was, old date included
fi

# The console gets the job's lines and one "error:" line per failure; full traces go to the log file.
log_file=${MOBA_LOG:-$here/logs/moba-spark.log}
mkdir -p "$(dirname "$log_file")"
# Two JVM flags: an array, so that each reaches java as its own argument (one string made log4j look for a file
# named by both, find none and fall back to Spark's defaults: INFO lines on the console and no log file).
log_conf=("-Dlog4j.configurationFile=$here/conf/log4j2.properties" "-Dmoba.log=$log_file")
if [ -n "${SPARK_HOME:-}" ] && [ -x "$SPARK_HOME/bin/spark-submit" ]; then
  # shellcheck disable=SC2086
  exec "$SPARK_HOME/bin/spark-submit" --class org.moba.job.MobaCli \
      --driver-java-options "${log_conf[*]}" ${SPARK_SUBMIT_OPTS_MOBA:-} "$shaded" "$@"
fi

# The embedded Spark UI (on by default; its address is printed) listens on SPARK_LOCAL_IP, else on every interface:
# keep it on this host unless asked otherwise.
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
# The JVM flags Spark needs on Java 17, kept in one place: the parent pom.
java_opts=$(sed -n 's:.*<spark.module.opens>\(.*\)</spark.module.opens>.*:\1:p' "$here/pom.xml")
# shellcheck disable=SC2086
exec java ${JAVA_OPTS:-} $java_opts "${log_conf[@]}" \
    -cp "$here/job/target/classes:$here/kernels/target/classes:$(cat "$cp_file")" org.moba.job.MobaCli "$@"
