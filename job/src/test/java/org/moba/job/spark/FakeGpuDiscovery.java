package org.moba.job.spark;

import java.util.Optional;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.spark.SparkConf;
import org.apache.spark.api.resource.ResourceDiscoveryPlugin;
import org.apache.spark.resource.ResourceInformation;
import org.apache.spark.resource.ResourceRequest;

/**
 * Hands each in-process local-cluster worker its own block of fake GPU addresses (docs/spark-gpu.md "GPUs per worker"):
 * the workers share one JVM, so a counter gives distinct blocks where a fixed discovery script would give every worker
 * the same.
 */
public class FakeGpuDiscovery implements ResourceDiscoveryPlugin {
    private static final AtomicInteger NEXT = new AtomicInteger();

    @Override
    public Optional<ResourceInformation> discoverResource(ResourceRequest request, SparkConf conf) {
        if (!request.id().resourceName().equals("gpu")) {
            return Optional.empty();
        }
        int n = (int) request.amount();
        int base = NEXT.getAndAdd(n);
        String[] addresses = new String[n];
        for (int i = 0; i < n; i++) {
            addresses[i] = Integer.toString(base + i);
        }
        return Optional.of(new ResourceInformation("gpu", addresses));
    }
}
