package org.moba.kernels.cpu;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.IntConsumer;
import java.util.function.Supplier;

/**
 * A fixed pool of worker threads running index loops: each call hands out task indices from a shared counter, so
 * uneven tasks balance themselves. Each worker gets its own loop body from a factory, which is where per-thread
 * scratch buffers live. Several callers may run loops at once; they share the threads.
 */
final class ParallelLoop implements AutoCloseable {
    private final int threads;
    private final ExecutorService pool;

    ParallelLoop(int threads, String namePrefix) {
        this.threads = threads;
        AtomicInteger counter = new AtomicInteger();
        ThreadFactory factory = runnable -> {
            Thread t = new Thread(runnable, namePrefix + "-" + counter.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
        this.pool = Executors.newFixedThreadPool(threads, factory);
    }

    /** Runs {@code body.accept(i)} for every {@code i < tasks}, each worker using a body from {@code bodies}. */
    void forEach(int tasks, Supplier<IntConsumer> bodies) {
        if (tasks <= 0) {
            return;
        }
        AtomicInteger next = new AtomicInteger();
        int workers = Math.min(threads, tasks);
        List<Future<?>> futures = new ArrayList<>(workers);
        for (int w = 0; w < workers; w++) {
            futures.add(pool.submit(() -> {
                IntConsumer body = bodies.get();
                for (int i = next.getAndIncrement(); i < tasks; i = next.getAndIncrement()) {
                    body.accept(i);
                }
            }));
        }
        awaitAll(futures, next, tasks);
    }

    private static void awaitAll(List<Future<?>> futures, AtomicInteger next, int tasks) {
        Throwable failure = null;
        for (Future<?> f : futures) {
            try {
                f.get();
            } catch (ExecutionException e) {
                next.set(tasks); // stop the other workers early
                failure = failure == null ? e.getCause() : failure;
            } catch (InterruptedException e) {
                next.set(tasks);
                Thread.currentThread().interrupt();
                failure = failure == null ? e : failure;
            }
        }
        if (failure instanceof RuntimeException r) {
            throw r;
        }
        if (failure instanceof Error err) {
            throw err;
        }
        if (failure != null) {
            throw new IllegalStateException("CPU worker failed", failure);
        }
    }

    @Override
    public void close() {
        pool.shutdownNow();
    }
}
