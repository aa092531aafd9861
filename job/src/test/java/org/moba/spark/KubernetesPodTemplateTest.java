package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabric8.kubernetes.api.model.Container;
import io.fabric8.kubernetes.api.model.EnvVar;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientBuilder;
import java.nio.file.Path;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.spark.SecurityManager;
import org.apache.spark.SparkConf;
import org.apache.spark.deploy.k8s.KubernetesExecutorConf;
import org.apache.spark.deploy.k8s.SparkPod;
import org.apache.spark.resource.ResourceProfile;
import org.apache.spark.resource.ResourceProfile$;
import org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBuilder;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import scala.Option;

/**
 * The README's Kubernetes settings and {@code conf/k8s-gpu-executor-pod.yaml}, through Spark's own Kubernetes backend
 * offline: the executor pod Spark would ask the API server for carries one {@code nvidia.com/gpu}, the template's GPU
 * node selector and toleration, and the environment the discovery script and CUDA expect. No cluster: scheduling,
 * the NVIDIA device plugin and a real GPU in the pod are not exercised.
 */
@Timeout(120)
class KubernetesPodTemplateTest {
    private static final Path TEMPLATE = Path.of(System.getProperty("user.dir"))
            .resolve("../conf/k8s-gpu-executor-pod.yaml").normalize();

    @AfterEach
    void forgetProfile() {
        ResourceProfile$.MODULE$.clearDefaultProfile(); // a JVM-wide cache, built from the conf below
    }

    @Test
    void executorPodHasOneNvidiaGpuAndTheTemplatesPlacement() {
        SparkConf conf = new SparkConf(false)
                .setMaster("k8s://https://127.0.0.1:6443")
                .setAppName("moba k8s pod test")
                .set("spark.app.id", "spark-moba-pod-test")
                .set("spark.kubernetes.container.image", "registry.example/spark-moba:4.2.0")
                .set("spark.kubernetes.executor.podTemplateFile", TEMPLATE.toString())
                .set("spark.executor.cores", "8")
                .set("spark.executor.memory", "4g")
                .set("spark.executor.resource.gpu.amount", "1")
                .set("spark.task.resource.gpu.amount", "1")
                .set("spark.executor.resource.gpu.vendor", "nvidia.com")
                .set("spark.executor.resource.gpu.discoveryScript", "/opt/moba/conf/discover-gpus.sh");
        ResourceProfile$.MODULE$.clearDefaultProfile();
        ResourceProfile profile = ResourceProfile$.MODULE$.getOrCreateDefaultProfile(conf);
        SecurityManager security = new SecurityManager(conf, Option.empty(),
                org.apache.spark.internal.config.package$.MODULE$.AUTH_SECRET_FILE());
        SparkPod built;
        // Builds a client object only: nothing here talks to an API server.
        try (KubernetesClient client = new KubernetesClientBuilder().build()) {
            built = new KubernetesExecutorBuilder().buildFromFeatures(new KubernetesExecutorConf(conf,
                    "spark-moba-pod-test", "1", Option.empty(), profile.id()), security, client, profile).pod();
        }
        Pod pod = built.pod();
        Container executor = built.container();
        assertEquals("spark-executor", executor.getName(), "the template's executor container");
        assertEquals("1", executor.getResources().getLimits().get("nvidia.com/gpu").getAmount(),
                "Spark asks for one NVIDIA GPU: " + executor.getResources());
        assertEquals("true", pod.getSpec().getNodeSelector().get("nvidia.com/gpu.present"));
        assertTrue(pod.getSpec().getTolerations().stream().anyMatch(t -> t.getKey().equals("nvidia.com/gpu")
                && t.getOperator().equals("Exists") && t.getEffect().equals("NoSchedule")), "GPU toleration");
        Map<String, String> env = executor.getEnv().stream().filter(e -> e.getValue() != null)
                .collect(Collectors.toMap(EnvVar::getName, EnvVar::getValue, (a, b) -> b));
        assertEquals("PCI_BUS_ID", env.get("CUDA_DEVICE_ORDER"), "the template's environment survives");
        assertEquals("registry.example/spark-moba:4.2.0", executor.getImage());
    }
}
