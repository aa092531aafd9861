package org.moba.job.spark;

import java.net.InetAddress;
import java.net.UnknownHostException;

/** The name of the host a task runs on, for result rows. */
public final class Hosts {
    private Hosts() {
    }

    public static String name() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (UnknownHostException e) {
            return "unknown-host";
        }
    }
}
