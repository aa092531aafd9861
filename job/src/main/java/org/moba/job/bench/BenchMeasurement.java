package org.moba.job.bench;

import java.io.Serializable;

/**
 * Timings of one shape on one device: a row of the bench output (a JavaBean, so Spark encodes it).
 * Times are milliseconds of the compute phases (kernels, no host copies), for MoBA and for the dense causal baseline
 * on the same inputs: per repeat summed over the shape's batches, then the median (p10, p90) over the repeats.
 */
public class BenchMeasurement implements Serializable {
    private static final long serialVersionUID = 1L;

    private String host;
    private String executorId;
    private String gpuAddresses;
    private String pciBusId;
    private String backend;
    private String device;
    private int deviceOrdinal;
    private String deviceSource;
    private String shape;
    private String config;
    private String lengths;
    private int sequences;
    private double meanLength;
    private int tokens;
    private int batches;
    private long attendedPairs;
    private double mobaMedianMs;
    private double mobaP10Ms;
    private double mobaP90Ms;
    private double gateMedianMs;
    private double attentionMedianMs;
    private double copyMedianMs;
    private double denseMedianMs;
    private double usefulTflops;
    private double tokensPerSecond;
    private double speedupOverDense;
    private boolean straggler;
    private double timedKernelMs;
    private double inputMs;
    private double taskWallMs;

    public String getHost() { return host; }
    public void setHost(String v) { host = v; }
    /** The Spark executor that ran the task ({@code driver} in local mode). */
    public String getExecutorId() { return executorId; }
    public void setExecutorId(String v) { executorId = v; }
    /** The GPU address(es) Spark assigned the task, comma-separated; null when it assigned none. */
    public String getGpuAddresses() { return gpuAddresses; }
    public void setGpuAddresses(String v) { gpuAddresses = v; }
    /** PCI bus id of the CUDA device the task was bound to; null on the CPU. */
    public String getPciBusId() { return pciBusId; }
    public void setPciBusId(String v) { pciBusId = v; }
    public String getBackend() { return backend; }
    public void setBackend(String v) { backend = v; }
    public String getDevice() { return device; }
    public void setDevice(String v) { device = v; }
    public int getDeviceOrdinal() { return deviceOrdinal; }
    public void setDeviceOrdinal(int v) { deviceOrdinal = v; }
    public String getDeviceSource() { return deviceSource; }
    public void setDeviceSource(String v) { deviceSource = v; }
    public String getShape() { return shape; }
    public void setShape(String v) { shape = v; }
    /** The shape without its lengths ({@code bf16 H8/2 D64 C128 k3}), to group a series of lengths. */
    public String getConfig() { return config; }
    public void setConfig(String v) { config = v; }
    /** The length mix ({@code 4x2048}, {@code uniform:...}). */
    public String getLengths() { return lengths; }
    public void setLengths(String v) { lengths = v; }
    public int getSequences() { return sequences; }
    public void setSequences(int v) { sequences = v; }
    /** Mean tokens per sequence: the x axis of throughput against sequence length. */
    public double getMeanLength() { return meanLength; }
    public void setMeanLength(double v) { meanLength = v; }
    public int getTokens() { return tokens; }
    public void setTokens(int v) { tokens = v; }
    public int getBatches() { return batches; }
    public void setBatches(int v) { batches = v; }
    public long getAttendedPairs() { return attendedPairs; }
    public void setAttendedPairs(long v) { attendedPairs = v; }
    public double getMobaMedianMs() { return mobaMedianMs; }
    public void setMobaMedianMs(double v) { mobaMedianMs = v; }
    public double getMobaP10Ms() { return mobaP10Ms; }
    public void setMobaP10Ms(double v) { mobaP10Ms = v; }
    public double getMobaP90Ms() { return mobaP90Ms; }
    public void setMobaP90Ms(double v) { mobaP90Ms = v; }
    public double getGateMedianMs() { return gateMedianMs; }
    public void setGateMedianMs(double v) { gateMedianMs = v; }
    public double getAttentionMedianMs() { return attentionMedianMs; }
    public void setAttentionMedianMs(double v) { attentionMedianMs = v; }
    /**
     * Host<->device copies of MoBA, summed over the batches: each batch's upload (q, k, v and index arrays) and one
     * download (out, lse, selection), measured once, since the repeats run on the uploaded batch. Zero on a backend
     * without a device. The column keeps its name from when every repeat copied and this was their median.
     */
    public double getCopyMedianMs() { return copyMedianMs; }
    public void setCopyMedianMs(double v) { copyMedianMs = v; }
    public double getDenseMedianMs() { return denseMedianMs; }
    public void setDenseMedianMs(double v) { denseMedianMs = v; }
    public double getUsefulTflops() { return usefulTflops; }
    public void setUsefulTflops(double v) { usefulTflops = v; }
    public double getTokensPerSecond() { return tokensPerSecond; }
    public void setTokensPerSecond(double v) { tokensPerSecond = v; }
    public double getSpeedupOverDense() { return speedupOverDense; }
    public void setSpeedupOverDense(double v) { speedupOverDense = v; }
    /** Device compute time of the timed repeats (MoBA and dense), the part of the task that is measurement. */
    public double getTimedKernelMs() { return timedKernelMs; }
    public void setTimedKernelMs(double v) { timedKernelMs = v; }
    /**
     * Time the task took to get the shape's inputs: building them, or waiting for the slot of the same executor that
     * builds them ({@link SharedInputs}).
     */
    public double getInputMs() { return inputMs; }
    public void setInputMs(double v) { inputMs = v; }
    /** Wall time of the whole shape on the task: inputs, warm-up, copies, repeats. */
    public double getTaskWallMs() { return taskWallMs; }
    public void setTaskWallMs(double v) { taskWallMs = v; }
    public boolean isStraggler() { return straggler; }
    public void setStraggler(boolean v) { straggler = v; }
}
