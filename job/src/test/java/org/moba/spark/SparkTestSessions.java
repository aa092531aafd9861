package org.moba.spark;

import java.util.List;
import org.apache.spark.sql.SparkSession;
import scala.Option;

/** Session handling shared by the Spark tests. */
public final class SparkTestSessions {
    private SparkTestSessions() {
    }

    /**
     * Stops the thread's active and the JVM's default session, so that the next builder starts a fresh one with its
     * own settings (a builder otherwise returns a running session and ignores settings fixed at context start).
     */
    public static void stopAll() {
        for (Option<SparkSession> s : List.of(SparkSession.getActiveSession(), SparkSession.getDefaultSession())) {
            if (s.isDefined()) {
                s.get().stop();
            }
        }
    }
}
