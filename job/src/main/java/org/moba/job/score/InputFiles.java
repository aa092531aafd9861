package org.moba.job.score;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocatedFileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RemoteIterator;

/** The input files under a path, as Spark's file sources see them. */
public final class InputFiles {
    private InputFiles() {
    }

    /**
     * The visible files below {@code path} (a file or a folder, any Hadoop filesystem), recursively and sorted,
     * skipping names that start with '_' or '.' below it as Spark's file index does (_SUCCESS, .crc, ...); null when
     * the path does not exist.
     */
    public static List<String> list(Configuration hadoop, String path) throws IOException {
        Path root = new Path(path);
        FileSystem fs = root.getFileSystem(hadoop);
        if (!fs.exists(root)) {
            return null;
        }
        List<String> files = new ArrayList<>();
        RemoteIterator<LocatedFileStatus> it = fs.listFiles(root, true);
        while (it.hasNext()) {
            Path p = it.next().getPath();
            if (!hidden(root, p)) {
                files.add(p.toString());
            }
        }
        files.sort(null);
        return files;
    }

    private static boolean hidden(Path root, Path p) {
        for (Path q = p; q != null && !q.getName().equals(root.getName()); q = q.getParent()) {
            if (q.getName().startsWith("_") || q.getName().startsWith(".")) {
                return true;
            }
        }
        return false;
    }
}
