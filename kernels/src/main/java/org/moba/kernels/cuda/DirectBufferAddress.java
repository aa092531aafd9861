package org.moba.kernels.cuda;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.lang.reflect.Field;
import java.nio.Buffer;
import java.nio.ByteBuffer;

/**
 * The native address of a direct buffer, for telling whether it lies in host memory the driver has page-locked
 * ({@link PinnedHostRanges}). The JDK has no public accessor for it (JNI's GetDirectBufferAddress is what JCuda
 * uses, and JCuda does not hand the number out), so this reads {@code java.nio.Buffer.address} through
 * {@code sun.misc.Unsafe}, as Netty, Arrow and Spark do. Where that is not possible the address is unknown, and
 * callers copy the slower way.
 */
final class DirectBufferAddress {
    private static final MethodHandle GET_LONG;
    private static final long ADDRESS_OFFSET;
    private static final String UNAVAILABLE;

    static {
        MethodHandle getLong = null;
        long offset = -1;
        String unavailable = null;
        try {
            Class<?> unsafeClass = Class.forName("sun.misc.Unsafe");
            Field theUnsafe = unsafeClass.getDeclaredField("theUnsafe");
            theUnsafe.setAccessible(true);
            Object unsafe = theUnsafe.get(null);
            offset = (long) unsafeClass.getMethod("objectFieldOffset", Field.class)
                    .invoke(unsafe, Buffer.class.getDeclaredField("address"));
            getLong = MethodHandles.lookup().findVirtual(unsafeClass, "getLong",
                    MethodType.methodType(long.class, Object.class, long.class)).bindTo(unsafe);
        } catch (ReflectiveOperationException | RuntimeException e) {
            unavailable = "the address of a direct buffer cannot be read on this Java runtime (" + e + ")";
        }
        GET_LONG = getLong;
        ADDRESS_OFFSET = offset;
        UNAVAILABLE = unavailable;
    }

    private DirectBufferAddress() {
    }

    /** Null when addresses can be read, else why not. */
    static String unavailableReason() {
        return UNAVAILABLE;
    }

    /**
     * The address of {@code buffer}'s element 0 (not of its position: a slice's element 0 is where the slice
     * starts), or 0 when the buffer is not direct or addresses cannot be read.
     */
    static long of(ByteBuffer buffer) {
        if (UNAVAILABLE != null || !buffer.isDirect()) {
            return 0;
        }
        try {
            return (long) GET_LONG.invokeExact((Object) buffer, ADDRESS_OFFSET);
        } catch (Throwable e) {
            throw new IllegalStateException("reading the address of a direct buffer", e);
        }
    }
}
