package org.moba.job.score;

import java.io.Closeable;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Positioned reads of one file straight into (direct) byte buffers: the way tensors get from storage to the host
 * buffers a batch is built in, with no array per record. A local file is read through a {@link FileChannel} (no
 * checksum layer, no copy through the heap); any other Hadoop filesystem through its positioned
 * {@code readFully}, in blocks of {@value #BLOCK} bytes through a heap array of each call. Positioned reads of one
 * instance may run on several threads at once (the loader reads pieces of a batch in parallel).
 */
public abstract class FileRanges implements Closeable {
    private static final int BLOCK = 4 << 20;

    /** The file's length in bytes. */
    public abstract long length();

    /** Fills {@code dst} from its position to its limit with the file's bytes from {@code position} on. */
    public abstract void readFully(long position, ByteBuffer dst) throws IOException;

    /** Opens {@code path} (any Hadoop filesystem; {@code file:} paths through a channel). */
    public static FileRanges open(String path, Configuration hadoop) throws IOException {
        Path p = new Path(path);
        String scheme = p.toUri().getScheme();
        if (scheme == null || scheme.equals("file")) {
            return new Local(FileChannel.open(Paths.get(p.toUri().getPath()), StandardOpenOption.READ));
        }
        FileSystem fs = p.getFileSystem(hadoop);
        return new Hadoop(fs.open(p), fs.getFileStatus(p).getLen());
    }

    /** A view of {@code bytes} as a file (for bytes already in memory). */
    public static FileRanges of(byte[] bytes) {
        return new FileRanges() {
            @Override
            public long length() {
                return bytes.length;
            }

            @Override
            public void readFully(long position, ByteBuffer dst) throws IOException {
                if (position < 0 || position + dst.remaining() > bytes.length) {
                    throw new EOFException("bytes [" + position + ", " + (position + dst.remaining())
                            + ") lie beyond the end of " + bytes.length);
                }
                dst.put(bytes, (int) position, dst.remaining());
            }

            @Override
            public void close() {
            }
        };
    }

    private static final class Local extends FileRanges {
        private final FileChannel channel;

        Local(FileChannel channel) {
            this.channel = channel;
        }

        @Override
        public long length() {
            try {
                return channel.size();
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }

        @Override
        public void readFully(long position, ByteBuffer dst) throws IOException {
            long at = position;
            while (dst.hasRemaining()) {
                int n = channel.read(dst, at);
                if (n < 0) {
                    throw new EOFException("file ends at " + channel.size() + " bytes, before " + (at
                            + dst.remaining()));
                }
                at += n;
            }
        }

        @Override
        public void close() throws IOException {
            channel.close();
        }
    }

    private static final class Hadoop extends FileRanges {
        private final FSDataInputStream in;
        private final long length;

        Hadoop(FSDataInputStream in, long length) {
            this.in = in;
            this.length = length;
        }

        @Override
        public long length() {
            return length;
        }

        @Override
        public void readFully(long position, ByteBuffer dst) throws IOException {
            if (dst.hasArray()) {
                int n = dst.remaining();
                in.readFully(position, dst.array(), dst.arrayOffset() + dst.position(), n);
                dst.position(dst.position() + n);
                return;
            }
            byte[] block = new byte[Math.min(BLOCK, dst.remaining())]; // per call: loaders read pieces concurrently
            for (long at = position; dst.hasRemaining(); ) {
                int n = Math.min(block.length, dst.remaining());
                in.readFully(at, block, 0, n);
                dst.put(block, 0, n);
                at += n;
            }
        }

        @Override
        public void close() throws IOException {
            in.close();
        }
    }
}
