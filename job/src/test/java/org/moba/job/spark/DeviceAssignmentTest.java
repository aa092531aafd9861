package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.apache.spark.SparkConf;
import org.junit.jupiter.api.Test;
import org.moba.job.run.ExitCode;
import org.moba.job.run.JobException;

class DeviceAssignmentTest {

    @Test
    void sparkAssignedAddressWins() {
        assertEquals(new DeviceAssignment("cuda", 3, "spark"),
                DeviceAssignment.decide("cuda", new String[] {"3"}, 0, 8));
    }

    @Test
    void withoutSparkResourcesTasksSpreadOverVisibleDevices() {
        assertEquals(new DeviceAssignment("auto", 1, "visible"), DeviceAssignment.decide("auto", null, 5, 2));
        assertEquals(new DeviceAssignment("auto", 0, "visible"), DeviceAssignment.decide("auto", new String[0], 4, 2));
    }

    @Test
    void autoWithoutAnyDeviceFallsBackToCpu() {
        assertEquals(new DeviceAssignment("cpu", -1, "fallback"), DeviceAssignment.decide("auto", null, 0, 0));
        assertEquals(new DeviceAssignment("cpu", -1, "cpu"), DeviceAssignment.decide("cpu", new String[] {"0"}, 0, 4));
    }

    @Test
    void cudaWithoutAnyDeviceIsAClearError() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> DeviceAssignment.decide("cuda", null, 0, 0));
        assertTrue(e.getMessage().contains("no CUDA device is visible"), e.getMessage());
    }

    @Test
    void nonNumericAddressIsAClearError() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> DeviceAssignment.decide("cuda", new String[] {"GPU-5e1f"}, 0, 0));
        assertTrue(e.getMessage().contains("'GPU-5e1f'"), e.getMessage());
    }

    @Test
    void localMasterWithTaskGpuAmountIsRefusedInsteadOfHanging() {
        SparkConf conf = new SparkConf(false).setMaster("local[4]").set(SparkSessions.TASK_GPU_AMOUNT, "1");
        JobException e = assertThrows(JobException.class, () -> SparkSessions.checkGpuSettings(conf));
        assertEquals(ExitCode.USAGE, e.exitCode());
        assertTrue(e.getMessage().contains("local mode never assigns GPUs"), e.getMessage());
        SparkSessions.checkGpuSettings(new SparkConf(false).setMaster("local-cluster[2,1,1024]")
                .set(SparkSessions.TASK_GPU_AMOUNT, "1"));
    }
}
