package org.moba.job.spark;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.spark.SparkContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerStageCompleted;
import org.apache.spark.scheduler.SparkListenerStageSubmitted;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Logs a job's progress on the driver, task by task, with an ETA from the mean task time so far: long runs (score
 * over many partitions, sweep over many configurations) say how far they are. Spark's console progress bar shows
 * the same count but no ETA, and not in log files.
 */
public final class Progress extends SparkListener {
    private static final Logger LOG = LoggerFactory.getLogger(Progress.class);
    /** At most one line per stage this often, plus the stage's last task. */
    private static final long INTERVAL_NANOS = 5_000_000_000L;

    private final String job;
    private final String unit;
    private final Map<Integer, Stage> stages = new ConcurrentHashMap<>();

    private static final class Stage {
        final int tasks;
        final long start = System.nanoTime();
        int done;
        long lastLog = System.nanoTime();

        Stage(int tasks) {
            this.tasks = tasks;
        }
    }

    private Progress(String job, String unit) {
        this.job = job;
        this.unit = unit;
    }

    /** Registers progress logging for the rest of the session; {@code unit} names what one task does. */
    public static void register(SparkContext sc, String job, String unit) {
        sc.addSparkListener(new Progress(job, unit));
    }

    @Override
    public void onStageSubmitted(SparkListenerStageSubmitted event) {
        stages.put(event.stageInfo().stageId(), new Stage(event.stageInfo().numTasks()));
    }

    @Override
    public void onStageCompleted(SparkListenerStageCompleted event) {
        stages.remove(event.stageInfo().stageId());
    }

    @Override
    public void onTaskEnd(SparkListenerTaskEnd event) {
        Stage s = stages.get(event.stageId());
        if (s == null || !event.taskInfo().successful()) {
            return;
        }
        synchronized (s) {
            s.done++;
            long now = System.nanoTime();
            if (s.done < s.tasks && now - s.lastLog < INTERVAL_NANOS) {
                return;
            }
            s.lastLog = now;
            double elapsed = (now - s.start) / 1e9;
            LOG.info("{}: {}/{} {}s done (stage {}) after {} s; ETA {} s", job, s.done, s.tasks, unit,
                    event.stageId(), Math.round(elapsed), Math.round(elapsed / s.done * (s.tasks - s.done)));
        }
    }
}
