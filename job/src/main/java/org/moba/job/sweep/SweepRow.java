package org.moba.job.sweep;

import java.io.Serializable;

/**
 * The errors of one sequence of one sweep configuration (a JavaBean, so Spark encodes it). The task-device columns
 * (host, executorId, gpuAddresses, deviceOrdinal, pciBusId: {@link org.moba.job.spark.TaskDevice} owns their meaning)
 * are plain bean accessors, like {@link org.moba.job.bench.BenchMeasurement}'s, with no logic to share.
 */
public class SweepRow implements Serializable {
    private static final long serialVersionUID = 1L;

    private String config;
    private String dtype;
    private String backend;
    private String device;
    private String host;
    private String executorId;
    private String gpuAddresses;
    private int deviceOrdinal;
    private String pciBusId;
    private String sequenceId;
    private int length;
    private int tokensCompared;
    private int rowsCompared;
    private double outRelL2;
    private double outMaxAbs;
    private double lseRelL2;
    private double lseMaxAbs;
    private int selectionMismatches;
    private int nearTies;
    // Gradient errors (sweep --backward); null where the backward was not checked.
    private Double dqRelL2;
    private Double dqMaxAbs;
    private Double dkRelL2;
    private Double dkMaxAbs;
    private Double dvRelL2;
    private Double dvMaxAbs;
    private boolean pass;
    private String reproduce;

    public String getConfig() { return config; }
    public void setConfig(String v) { config = v; }
    public String getDtype() { return dtype; }
    public void setDtype(String v) { dtype = v; }
    public String getBackend() { return backend; }
    public void setBackend(String v) { backend = v; }
    public String getDevice() { return device; }
    public void setDevice(String v) { device = v; }
    public String getHost() { return host; }
    public void setHost(String v) { host = v; }
    /** The Spark executor that ran the task ({@code driver} in local mode). */
    public String getExecutorId() { return executorId; }
    public void setExecutorId(String v) { executorId = v; }
    /** The GPU address(es) Spark assigned the task, comma-separated; null when it assigned none. */
    public String getGpuAddresses() { return gpuAddresses; }
    public void setGpuAddresses(String v) { gpuAddresses = v; }
    /** The CUDA ordinal the task's backend is bound to (for the CPU backend the one assigned, -1 when none). */
    public int getDeviceOrdinal() { return deviceOrdinal; }
    public void setDeviceOrdinal(int v) { deviceOrdinal = v; }
    /** PCI bus id of the CUDA device the task was bound to; null on the CPU. */
    public String getPciBusId() { return pciBusId; }
    public void setPciBusId(String v) { pciBusId = v; }
    public String getSequenceId() { return sequenceId; }
    public void setSequenceId(String v) { sequenceId = v; }
    public int getLength() { return length; }
    public void setLength(int v) { length = v; }
    public int getTokensCompared() { return tokensCompared; }
    public void setTokensCompared(int v) { tokensCompared = v; }
    public int getRowsCompared() { return rowsCompared; }
    public void setRowsCompared(int v) { rowsCompared = v; }
    public double getOutRelL2() { return outRelL2; }
    public void setOutRelL2(double v) { outRelL2 = v; }
    public double getOutMaxAbs() { return outMaxAbs; }
    public void setOutMaxAbs(double v) { outMaxAbs = v; }
    public double getLseRelL2() { return lseRelL2; }
    public void setLseRelL2(double v) { lseRelL2 = v; }
    public double getLseMaxAbs() { return lseMaxAbs; }
    public void setLseMaxAbs(double v) { lseMaxAbs = v; }
    public int getSelectionMismatches() { return selectionMismatches; }
    public void setSelectionMismatches(int v) { selectionMismatches = v; }
    public int getNearTies() { return nearTies; }
    public void setNearTies(int v) { nearTies = v; }
    public Double getDqRelL2() { return dqRelL2; }
    public void setDqRelL2(Double v) { dqRelL2 = v; }
    public Double getDqMaxAbs() { return dqMaxAbs; }
    public void setDqMaxAbs(Double v) { dqMaxAbs = v; }
    public Double getDkRelL2() { return dkRelL2; }
    public void setDkRelL2(Double v) { dkRelL2 = v; }
    public Double getDkMaxAbs() { return dkMaxAbs; }
    public void setDkMaxAbs(Double v) { dkMaxAbs = v; }
    public Double getDvRelL2() { return dvRelL2; }
    public void setDvRelL2(Double v) { dvRelL2 = v; }
    public Double getDvMaxAbs() { return dvMaxAbs; }
    public void setDvMaxAbs(Double v) { dvMaxAbs = v; }
    public boolean isPass() { return pass; }
    public void setPass(boolean v) { pass = v; }
    public String getReproduce() { return reproduce; }
    public void setReproduce(String v) { reproduce = v; }
}
