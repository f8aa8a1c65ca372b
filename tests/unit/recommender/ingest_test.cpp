// File ingestion: the documented long CSV (every bad-row kind with its exact message) and the
// Bitbrains GWA-T-12 traces (hand-computed conversions, gzip, one real shared trace).
#include "recommender/ingest.h"
#include "recommender/prometheus.h"
#include "support/data_dir.h"
#include "support/fixtures.h"

#include <gtest/gtest.h>
#include <cmath>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sizeguard {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "sizeguard-ingest-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  fs::path write_gz(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    gzFile f = gzopen(p.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    EXPECT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
    gzclose(f);
    return p;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return {};
}

// ---------------------------------------------------------------------------------------------
// Long CSV

TEST(UsageCsv, HappyPathWithOptionalColumnsAndRfc3339) {
  TempDir dir;
  const auto file = dir.write("usage.csv",
                              "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes,"
                              "cpu_request,memory_request,cpu_limit,memory_limit\n"
                              "2024-05-01T12:05:00Z,shop,Deployment,web,app,0.5,104857600,1,268435456,2,536870912\n"
                              "2024-05-01T12:00:00Z,shop,Deployment,web,app,0.25,52428800,0.5,134217728,,\n"
                              "1714565100,shop,Deployment,web,sidecar,0.01,1048576,,,,\n"
                              "2024-05-01T14:10:00+02:00,shop,Deployment,web,app,0.75,157286400,,,,\n"
                              "\n"
                              "2024-05-01T12:00:00.250Z,db,StatefulSet,pg,postgres,2,1e9,,,,\n");
  IngestReport report;
  const auto series = read_usage_csv(file, report);
  EXPECT_EQ(report.rows_read, 5u);
  EXPECT_EQ(report.rows_used, 5u);
  EXPECT_EQ(report.rows_bad, 0u);
  EXPECT_TRUE(report.errors.empty());
  ASSERT_EQ(series.size(), 3u);  // sorted by key
  EXPECT_EQ(series[0].key.to_string(), "db/StatefulSet/pg/postgres");
  EXPECT_EQ(series[1].key.to_string(), "shop/Deployment/web/app");
  EXPECT_EQ(series[2].key.to_string(), "shop/Deployment/web/sidecar");

  const int64_t noon = 1714564800;  // 2024-05-01T12:00:00Z
  const auto& web = series[1];
  ASSERT_EQ(web.samples.size(), 3u);
  EXPECT_EQ(web.samples[0].timestamp, noon);
  EXPECT_DOUBLE_EQ(web.samples[0].cpu_cores, 0.25);
  EXPECT_DOUBLE_EQ(web.samples[0].memory_bytes, 52428800);
  EXPECT_EQ(web.samples[1].timestamp, noon + 300);
  EXPECT_EQ(web.samples[2].timestamp, noon + 600);  // 14:10 +02:00 = 12:10Z
  EXPECT_DOUBLE_EQ(web.samples[2].cpu_cores, 0.75);
  // Latest known spec values: the 12:05 row (the 12:10 row leaves them empty).
  EXPECT_EQ(web.spec.cpu_request, 1.0);
  EXPECT_EQ(web.spec.memory_request, 268435456.0);
  EXPECT_EQ(web.spec.cpu_limit, 2.0);
  EXPECT_EQ(web.spec.memory_limit, 536870912.0);

  // Each change is kept with its time, so a backtest origin sees the request in force then:
  // 12:00 request 0.5 (limits unknown), from 12:05 request 1 and both limits.
  ASSERT_EQ(web.spec_history.size(), 2u);
  EXPECT_EQ(web.spec_history[0].since, noon);
  EXPECT_EQ(spec_at(web, noon + 1).cpu_request, 0.5);
  EXPECT_FALSE(spec_at(web, noon + 1).cpu_limit.has_value());
  EXPECT_EQ(spec_at(web, noon + 301).cpu_request, 1.0);
  EXPECT_EQ(spec_at(web, noon + 301).memory_limit, 536870912.0);
  EXPECT_FALSE(spec_at(web, noon).cpu_request.has_value());  // nothing known before the first row

  EXPECT_EQ(series[2].samples.at(0).timestamp, noon + 300);
  EXPECT_FALSE(series[2].spec.cpu_request.has_value());
  EXPECT_EQ(series[0].samples.at(0).timestamp, noon);  // fraction dropped
  EXPECT_DOUBLE_EQ(series[0].samples[0].memory_bytes, 1e9);
}

TEST(UsageCsv, ColumnOrderDoesNotMatter) {
  TempDir dir;
  const auto a = dir.write("a.csv",
                           "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes\n"
                           "100,ns,Deployment,w,c,0.5,1000\n"
                           "400,ns,Deployment,w,c,1.5,3000\n");
  const auto b = dir.write("b.csv",
                           "memory_bytes, Container ,cpu_cores,workload,TIMESTAMP,workload_kind,namespace\r\n"
                           "3000,c,1.5,w,400,Deployment,ns\r\n"
                           "1000,c,0.5,w,100,Deployment,ns\r\n");
  IngestReport ra, rb;
  const auto sa = read_usage_csv(a, ra);
  const auto sb = read_usage_csv(b, rb);
  ASSERT_EQ(sa.size(), 1u);
  ASSERT_EQ(sb.size(), 1u);
  EXPECT_EQ(sa[0].key, sb[0].key);
  ASSERT_EQ(sb[0].samples.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(sa[0].samples[i].timestamp, sb[0].samples[i].timestamp);
    EXPECT_EQ(sa[0].samples[i].cpu_cores, sb[0].samples[i].cpu_cores);
    EXPECT_EQ(sa[0].samples[i].memory_bytes, sb[0].samples[i].memory_bytes);
  }
  EXPECT_EQ(rb.rows_bad, 0u);
}

TEST(UsageCsv, EveryBadRowKindIsCountedAndDescribed) {
  TempDir dir;
  const auto file = dir.write("bad.csv",
                              "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes,cpu_request\n"
                              "100,ns,Deployment,w,c,0.5,1000,1\n"               // 2 ok
                              "200,ns,Deployment,w,c,abc,1000,1\n"               // 3 bad cpu
                              "300,ns,Deployment,w,c,0.5,-5,1\n"                 // 4 negative memory
                              "400,ns,Deployment,w,c,0.5,1000\n"                 // 5 too few columns
                              "500,ns,Deployment,w,c,0.5,1000,1,extra\n"         // 6 too many columns
                              "yesterday,ns,Deployment,w,c,0.5,1000,1\n"         // 7 bad timestamp
                              "2024-02-30T00:00:00Z,ns,Deployment,w,c,0.5,1000,1\n"  // 8 no such day
                              "1714564800000,ns,Deployment,w,c,0.5,1000,1\n"     // 9 milliseconds
                              "600,,Deployment,w,c,0.5,1000,1\n"                 // 10 empty namespace
                              "700,ns,Deployment,w,c,0.5,1000,1k\n"              // 11 bad optional
                              "800,ns,Deployment,w,c,nan,1000,1\n"               // 12 not finite
                              "900,ns,Deployment,w,c,0.5,1000,\"1\n"             // 13 quoting
                              "100,ns,Deployment,w,c,0.7,2000,2\n"               // 14 duplicate of 2: wins
                              "1000,ns,Deployment,w,c,,1000,1\n");               // 15 empty cpu
  IngestReport report;
  const auto series = read_usage_csv(file, report);
  EXPECT_EQ(report.rows_read, 14u);
  EXPECT_EQ(report.rows_used, 1u);
  EXPECT_EQ(report.rows_bad, 13u);
  const std::string f = file.string();
  const std::vector<std::string> expected = {
      f + ":3: column 'cpu_cores': bad value 'abc' (expected a non-negative number)",
      f + ":4: column 'memory_bytes': bad value '-5' (expected a non-negative number)",
      f + ":5: wrong column count: expected 8, got 7",
      f + ":6: wrong column count: expected 8, got 9",
      f + ":7: column 'timestamp': bad value 'yesterday' (expected epoch seconds or RFC3339 like "
          "2024-05-01T12:00:00Z)",
      f + ":8: column 'timestamp': bad value '2024-02-30T00:00:00Z' (expected epoch seconds or RFC3339 like "
          "2024-05-01T12:00:00Z)",
      f + ":9: column 'timestamp': bad value '1714564800000' (expected epoch seconds or RFC3339 like "
          "2024-05-01T12:00:00Z)",
      f + ":10: column 'namespace': bad value '' (expected a non-empty name)",
      f + ":11: column 'cpu_request': bad value '1k' (expected a non-negative number)",
      f + ":12: column 'cpu_cores': bad value 'nan' (expected a non-negative number)",
      f + ":13: malformed quoting",
      f + ":15: column 'cpu_cores': bad value '' (expected a non-negative number)",
      f + ":2: column 'timestamp': duplicate value '100' for ns/Deployment/w/c (superseded by line 14; the last "
          "row wins)",
  };
  EXPECT_EQ(report.errors, expected);
  ASSERT_EQ(series.size(), 1u);
  ASSERT_EQ(series[0].samples.size(), 1u);
  EXPECT_DOUBLE_EQ(series[0].samples[0].cpu_cores, 0.7);
  EXPECT_EQ(series[0].spec.cpu_request, 2.0);
}

TEST(UsageCsv, ErrorsAreCappedButEveryBadRowIsCounted) {
  TempDir dir;
  std::string text = "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes\n";
  for (int i = 0; i < 120; ++i) text += std::to_string(i) + ",ns,Deployment,w,c,x,1\n";
  text += "5000,ns,Deployment,w,c,1,1\n";
  const auto file = dir.write("many.csv", text);
  IngestReport report;
  EXPECT_EQ(read_usage_csv(file, report).size(), 1u);
  EXPECT_EQ(report.rows_bad, 120u);
  EXPECT_EQ(report.errors.size(), IngestReport::kMaxErrors);
}

TEST(UsageCsv, AllBadFileThrows) {
  TempDir dir;
  const auto file = dir.write("allbad.csv",
                              "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes\n"
                              "100,ns,Deployment,w,c,abc,1000\n"
                              "200,ns,Deployment,w,c\n");
  IngestReport report;
  const std::string what = message_of([&] { read_usage_csv(file, report); });
  EXPECT_EQ(what, file.string() + ": no usable row (2 rows read, 2 bad; first error: " + file.string() +
                      ":2: column 'cpu_cores': bad value 'abc' (expected a non-negative number))");
  EXPECT_EQ(report.rows_bad, 2u);  // the caller's report still learns why
}

TEST(UsageCsv, HeaderProblemsThrowOrAreNoted) {
  TempDir dir;
  IngestReport report;
  const auto empty = dir.write("empty.csv", "\n\n");
  EXPECT_NE(message_of([&] { read_usage_csv(empty, report); }).find("empty file"), std::string::npos);
  const auto header_only =
      dir.write("header.csv", "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes\n");
  EXPECT_NE(message_of([&] { read_usage_csv(header_only, report); }).find("no usable row (0 rows read"),
            std::string::npos);
  const auto missing = dir.write("missing.csv", "timestamp,namespace,workload_kind,workload,cpu_cores,memory_bytes\n");
  EXPECT_NE(message_of([&] { read_usage_csv(missing, report); }).find(":1: missing column 'container'"),
            std::string::npos);
  const auto extra = dir.write("extra.csv",
                               "node,timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes\n"
                               "n1,100,ns,Deployment,w,c,1,1\n");
  IngestReport noted;
  EXPECT_EQ(read_usage_csv(extra, noted).size(), 1u);
  EXPECT_EQ(noted.rows_bad, 0u);
  ASSERT_EQ(noted.errors.size(), 1u);
  EXPECT_EQ(noted.errors[0], extra.string() + ":1: column 'node' ignored (not part of the schema)");
  EXPECT_NE(message_of([&] { read_usage_csv(dir.path() / "nope.csv", report); }).find("cannot open"),
            std::string::npos);
}

TEST(UsageCsv, ReadsGzipAndQuotedFields) {
  TempDir dir;
  const auto file = dir.write_gz("usage.csv.gz",
                                 "\"timestamp\",namespace,workload_kind,workload,container,cpu_cores,memory_bytes\n"
                                 "100,\"ns\",Deployment,\"we,b\",c,1,2\n");
  IngestReport report;
  const auto series = read_usage_csv(file, report);
  ASSERT_EQ(series.size(), 1u);
  EXPECT_EQ(series[0].key.name, "we,b");
}

TEST(ExtraTraces, GoogleAndAlibabaSamplesReadAsLongCsvWithTheirRequests) {
  IngestReport report;
  const auto google = read_usage_csv(test::test_fixture_path("usage/extra-traces-sample/google2019.csv.gz"), report);
  ASSERT_EQ(google.size(), 2u);
  EXPECT_EQ(report.rows_bad, 0u);
  EXPECT_EQ(google[0].key.to_string(), "google2019-a/Job/113812204462/task-11");
  EXPECT_EQ(google[0].samples.front().timestamp, 1557354319);
  EXPECT_DOUBLE_EQ(google[0].samples.front().cpu_cores, 0.505859);
  ASSERT_FALSE(google[0].spec_history.empty());
  EXPECT_EQ(spec_at(google[0], 1557354320).cpu_request, 0.583008);
  IngestReport hosts;
  const auto alibaba = read_usage_csv(test::test_fixture_path("usage/extra-traces-sample/alibaba2018.csv.gz"), hosts);
  ASSERT_EQ(alibaba.size(), 2u);
  EXPECT_EQ(hosts.rows_bad, 0u);
  EXPECT_EQ(alibaba[0].spec.cpu_request, 96.0);
  EXPECT_TRUE(alibaba[0].has_memory);
}

TEST(ExtraTraces, AzureCpuSampleIsCpuOnlyInVmUnits) {
  IngestReport report;
  const auto vms = read_azure_cpu(test::test_fixture_path("usage/extra-traces-sample/azure2017.csv.gz"), report);
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(report.rows_read, 2304u);
  EXPECT_EQ(report.rows_bad, 0u);
  const auto& vm = vms[0].key.name == "1633748" ? vms[0] : vms[1];
  EXPECT_EQ(vm.key.to_string(), "azure2017/VM/1633748/main");
  EXPECT_FALSE(vm.has_memory);
  ASSERT_EQ(vm.samples.size(), 1152u);
  EXPECT_EQ(vm.samples[1].timestamp, 300);
  EXPECT_DOUBLE_EQ(vm.samples[0].cpu_cores, 0.44459092);  // 44.459092% of the VM
  EXPECT_EQ(vm.samples[0].memory_bytes, 0.0);
  // Bad rows are counted and described; a missing column is a clear error.
  IngestReport bad;
  const auto one = parse_azure_cpu("vm,step,t_offset_s,cpu_avg_pct,cpu_max_pct\n1,0,0,50,60\n1,1,300,150,160\n1,2,x,1,1\n",
                                   "azure.csv", bad);
  EXPECT_EQ(one.at(0).samples.size(), 1u);
  EXPECT_EQ(bad.rows_bad, 2u);
  EXPECT_NE(bad.errors.at(0).find("column 'cpu_avg_pct': bad value '150'"), std::string::npos) << bad.errors[0];
  IngestReport none;
  try {
    parse_azure_cpu("vm,step,cpu_avg_pct\n1,0,5\n", "azure.csv", none);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing column 't_offset_s'"), std::string::npos) << e.what();
  }
}

// train --also: another fleet's days go under this data's training days by whole weeks.
TEST(LayUnder, MovesAnotherFleetsDaysUnderTheTrainingDaysByWholeWeeks) {
  constexpr int64_t kDay = 86400, kWeek = 7 * kDay;
  constexpr int64_t kAli = 1514764800;   // 2018-01-01T00:00:00Z, a Monday
  constexpr int64_t kJuly = 1372636800;  // 2013-07-01T00:00:00Z, a Monday
  auto fleet = [&] {
    std::vector<UsageSeries> out(3);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i].key = {"other", "Node", "host" + std::to_string(i), "machine"};
      const int64_t first = i == 2 ? kAli + 6 * kDay : kAli;  // host2 starts after the days used
      for (int64_t t = first; t < kAli + 14 * kDay; t += 3600) out[i].samples.push_back({t + 60, 1.0 + i, 1e9});
      out[i].spec_history = {{kAli, {2.0, 2e9, {}, {}}}, {kAli + 2 * kDay, {3.0, 3e9, {}, {}}},
                             {kAli + 5 * kDay, {9.0, 9e9, {}, {}}}};
      out[i].spec = out[i].spec_history.back().spec;
    }
    return out;
  };
  // Days 1-4 of the other fleet under days 1-20 of this one.
  auto series = fleet();
  const int64_t end = kAli + 4 * kDay, target_end = kJuly + 20 * kDay;
  const int64_t shift = lay_under(series, kAli, end, kJuly, target_end);
  EXPECT_EQ(shift % kWeek, 0);
  EXPECT_LE(end + shift, target_end);
  EXPECT_GT(end + shift + kWeek, target_end);  // the latest whole week that fits
  ASSERT_EQ(series.size(), 2u);                // host2 had nothing in days 1-4
  for (const auto& s : series) {
    ASSERT_EQ(s.samples.size(), 4u * 24u);
    EXPECT_EQ(s.samples.front().timestamp, kAli + 60 + shift);
    EXPECT_LT(s.samples.back().timestamp, target_end);
    // Hour of day and weekday as they were: both are features.
    EXPECT_EQ((s.samples.front().timestamp - kJuly) % kWeek, 60);
    // Spec changes move with the samples; the one after the days used is gone.
    ASSERT_EQ(s.spec_history.size(), 2u);
    EXPECT_EQ(spec_at(s, kAli + shift + 3 * kDay).cpu_request, 3.0);
    EXPECT_EQ(spec_at(s, kAli + shift + kDay).memory_request, 2e9);
  }
  // More days than this data trains on: the earliest ones are left out, none lands before its start.
  auto longer = fleet();
  const int64_t short_begin = kJuly + 10 * kDay;
  const int64_t moved = lay_under(longer, kAli, kAli + 14 * kDay, short_begin, target_end);
  EXPECT_EQ(moved % kWeek, 0);
  ASSERT_EQ(longer.size(), 3u);
  for (const auto& s : longer) {
    EXPECT_GE(s.samples.front().timestamp, short_begin);
    EXPECT_LT(s.samples.back().timestamp, target_end);
  }
  // Data from after this data's days moves back (a negative shift, still whole weeks).
  auto later = fleet();
  EXPECT_EQ(lay_under(later, kAli, end, kAli - 10 * kDay, kAli - 3 * kDay), -kWeek);
  EXPECT_EQ(later.at(0).samples.front().timestamp, kAli - kWeek + 60);
}

TEST(UsageCsv, TextInMemoryReadsLikeAFile) {
  const std::string text =
      "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes\n"
      "1714564800,shop,Deployment,web,app,0.25,52428800\n"
      "1714565100,shop,Deployment,web,app,x,1\n";
  TempDir dir;
  IngestReport from_file, in_memory;
  const auto a = read_usage_csv(dir.write("usage.csv", text), from_file);
  const auto b = parse_usage_csv(text, "usage.csv", in_memory);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].key.to_string(), a[0].key.to_string());
  ASSERT_EQ(b[0].samples.size(), 1u);
  EXPECT_EQ(b[0].samples[0].timestamp, a[0].samples[0].timestamp);
  EXPECT_EQ(b[0].samples[0].cpu_cores, 0.25);
  EXPECT_EQ(in_memory.rows_bad, 1u);
  EXPECT_EQ(in_memory.errors,
            std::vector<std::string>{"usage.csv:3: column 'cpu_cores': bad value 'x' (expected a non-negative number)"});
}

TEST(Rfc3339, ParsesAndRejects) {
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339("2024-02-29T23:59:59Z"), 1709251199);
  EXPECT_EQ(parse_rfc3339("2024-05-01T12:00:00.999999999Z"), 1714564800);
  EXPECT_EQ(parse_rfc3339("2024-05-01T07:30:00-04:30"), 1714564800);
  EXPECT_EQ(parse_rfc3339("2023-02-29T00:00:00Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339("2024-05-01T12:00:00"), std::nullopt);  // no zone
  EXPECT_EQ(parse_rfc3339("2024-05-01T24:00:00Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339("2024-05-01T12:00:00Zjunk"), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// Bitbrains

const char* const kBitbrainsHeader =
    "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\t"
    "Memory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\t"
    "Disk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]\n";

// 4 cores of 2600 MHz = 10400 MHz; 8 GiB = 8388608 KB.
std::string fake_trace() {
  return std::string(kBitbrainsHeader) +
         "1372630104;\t4;\t10400.0;\t1300.0;\t12.5;\t8388608.0;\t1048576.0;\t0.0;\t0.0;\t0.0;\t0.0\n"
         "1372629804;\t4;\t10400.0;\t5200.0;\t50.0;\t8388608.0;\t2097152.0;\t0.0;\t0.0;\t0.0;\t0.0\n"
         "1372630404;\t0;\t0.0;\t0.0;\t0.0;\t8388608.0;\t0.0;\t0.0;\t0.0;\t0.0;\t0.0\n"
         "1372630704;\t4;\t10400.0;\tbad;\t0.0;\t8388608.0;\t0.0;\t0.0;\t0.0;\t0.0;\t0.0\n"
         "1372631004;\t4;\t10400.0\n"
         "1372631304;\t2;\t5200.0;\t2600.0;\t50.0;\t4194304.0;\t512.5;\t0.0;\t0.0;\t0.0;\t0.0\n"
         "1372631304;\t2;\t5200.0;\t650.0;\t12.5;\t4194304.0;\t256.0;\t0.0;\t0.0;\t0.0;\t0.0\n";
}

void expect_fake_series(const UsageSeries& s, const std::string& name) {
  EXPECT_EQ(s.key.to_string(), "bitbrains/VM/" + name + "/main");
  ASSERT_EQ(s.samples.size(), 3u);
  EXPECT_EQ(s.samples[0].timestamp, 1372629804);
  EXPECT_DOUBLE_EQ(s.samples[0].cpu_cores, 2.0);                  // 5200 / (10400 / 4)
  EXPECT_DOUBLE_EQ(s.samples[0].memory_bytes, 2147483648.0);      // 2097152 KB
  EXPECT_EQ(s.samples[1].timestamp, 1372630104);
  EXPECT_DOUBLE_EQ(s.samples[1].cpu_cores, 0.5);                  // 1300 / 2600
  EXPECT_DOUBLE_EQ(s.samples[1].memory_bytes, 1073741824.0);
  EXPECT_EQ(s.samples[2].timestamp, 1372631304);                  // the last duplicate wins
  EXPECT_DOUBLE_EQ(s.samples[2].cpu_cores, 0.25);                 // 650 / (5200 / 2)
  EXPECT_DOUBLE_EQ(s.samples[2].memory_bytes, 262144.0);          // 256 KB
  // Latest row's provisioning: 2 cores, 4 GiB.
  EXPECT_EQ(s.spec.cpu_request, 2.0);
  EXPECT_EQ(s.spec.memory_request, 4294967296.0);
  EXPECT_FALSE(s.spec.cpu_limit.has_value());
}

void expect_fake_report(const IngestReport& report, const std::string& f) {
  EXPECT_EQ(report.rows_read, 7u);
  EXPECT_EQ(report.rows_used, 3u);
  EXPECT_EQ(report.rows_bad, 4u);
  const std::vector<std::string> expected = {
      f + ":4: column 'CPU cores': bad value '0' (expected a positive number; 0 = no CPU provisioned, e.g. VM off)",
      f + ":5: column 'CPU usage [MHZ]': bad value 'bad' (expected a non-negative number)",
      f + ":6: wrong column count: expected 11, got 3",
      f + ":7: column 'Timestamp [ms]': duplicate value '1372631304' for bitbrains/VM/17/main (superseded by line "
          "8; the last row wins)",
  };
  EXPECT_EQ(report.errors, expected);
}

TEST(Bitbrains, PlainFileConversions) {
  TempDir dir;
  const auto file = dir.write("17.csv", fake_trace());
  IngestReport report;
  const auto series = read_bitbrains(file, report);
  ASSERT_EQ(series.size(), 1u);
  expect_fake_series(series[0], "17");
  expect_fake_report(report, file.string());
}

TEST(Bitbrains, GzipFileConversions) {
  TempDir dir;
  const auto file = dir.write_gz("17.csv.gz", fake_trace());
  IngestReport report;
  const auto series = read_bitbrains(file, report);
  ASSERT_EQ(series.size(), 1u);
  expect_fake_series(series[0], "17");
  expect_fake_report(report, file.string());
}

TEST(Bitbrains, TextInMemoryReadsLikeAFile) {
  IngestReport report;
  const UsageSeries series = parse_bitbrains(fake_trace(), "17.csv", report);
  expect_fake_series(series, "17");
  expect_fake_report(report, "17.csv");
  IngestReport empty_report;
  EXPECT_EQ(message_of([&] { parse_bitbrains(kBitbrainsHeader, "5.csv", empty_report); }),
            "5.csv: no usable row (0 rows read, 0 bad)");
}

// Found by tests/fuzz/bitbrains_fuzz: each value was finite, but the conversions gave
// infinite or NaN usage (MHz per core underflowing to 0, KB x 1024 overflowing).
TEST(Bitbrains, ConversionsThatLeaveTheDoubleRangeAreBadRows) {
  const std::string text = std::string(kBitbrainsHeader) +
                           "1372629804;\t2;\t5200.0;\t650.0;\t12.5;\t4194304.0;\t256.0;\t0;\t0;\t0;\t0\n"
                           "1372630104;\t1e300;\t1e-300;\t87.7;\t1.5;\t4194304.0;\t256.0;\t0;\t0;\t0;\t0\n"
                           "1372630404;\t1e300;\t1e-300;\t0;\t0;\t4194304.0;\t256.0;\t0;\t0;\t0;\t0\n"
                           "1372630704;\t2;\t5200.0;\t650.0;\t12.5;\t4194304.0;\t1e308;\t0;\t0;\t0;\t0\n"
                           "1372631004;\t2;\t5200.0;\t650.0;\t12.5;\t1e308;\t256.0;\t0;\t0;\t0;\t0\n";
  IngestReport report;
  const UsageSeries series = parse_bitbrains(text, "9.csv", report);
  ASSERT_EQ(series.samples.size(), 1u);
  EXPECT_DOUBLE_EQ(series.samples[0].cpu_cores, 0.25);
  EXPECT_EQ(series.spec.memory_request, 4294967296.0);  // the overflowing capacity is not taken
  EXPECT_EQ(report.rows_read, 5u);
  EXPECT_EQ(report.rows_bad, 4u);
  const std::vector<std::string> expected = {
      "9.csv:3: column 'CPU usage [MHZ]': bad value '87.7' (out of range: not a finite number of cores at the "
      "provisioned MHz per core)",
      "9.csv:4: column 'CPU usage [MHZ]': bad value '0' (out of range: not a finite number of cores at the "
      "provisioned MHz per core)",
      "9.csv:5: column 'Memory usage [KB]': bad value '1e308' (out of range: not a finite number of bytes)",
      "9.csv:6: column 'Memory capacity provisioned [KB]': bad value '1e308' (out of range: not a finite number of "
      "bytes)",
  };
  EXPECT_EQ(report.errors, expected);
}

TEST(Bitbrains, DirectoryInNumericOrderWithMaxFilesAndSkippedFiles) {
  TempDir dir;
  dir.write_gz("10.csv.gz", fake_trace());
  dir.write("2.csv", fake_trace());
  dir.write_gz("1.csv.gz", fake_trace());
  dir.write("notes.txt", "ignored");
  dir.write("3.csv", std::string(kBitbrainsHeader) + "1;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\t0\n");
  IngestReport report;
  const auto all = read_bitbrains(dir.path(), report);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].key.name, "1");
  EXPECT_EQ(all[1].key.name, "2");
  EXPECT_EQ(all[2].key.name, "10");
  EXPECT_EQ(report.rows_read, 22u);
  EXPECT_EQ(report.rows_bad, 13u);
  bool skipped = false;
  for (const auto& e : report.errors) skipped |= e.find("3.csv: no usable row (1 rows read, 1 bad") != std::string::npos;
  EXPECT_TRUE(skipped);

  IngestReport first_two;
  const auto two = read_bitbrains(dir.path(), first_two, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].key.name, "2");
  EXPECT_EQ(first_two.rows_read, 14u);

  IngestReport single;
  EXPECT_NE(message_of([&] { read_bitbrains(dir.path() / "3.csv", single); }).find("no usable row"),
            std::string::npos);
  EXPECT_NE(message_of([&] { read_bitbrains(dir.path() / "missing", single); }).find("not found"),
            std::string::npos);
}

// VM 1 of July 2013, as read from the real trace or from the derived sample (same rows,
// usage rounded): one series with the invariants every Bitbrains series must hold.
const UsageSeries& expect_july_2013_vm1(const std::vector<UsageSeries>& series, const IngestReport& report) {
  EXPECT_EQ(series.size(), 1u);
  const auto& s = series.at(0);
  EXPECT_EQ(s.key.to_string(), "bitbrains/VM/1/main");
  EXPECT_GT(s.samples.size(), 7000u);  // ~30 days of 5-minute samples
  EXPECT_EQ(report.rows_used, s.samples.size());
  EXPECT_EQ(report.rows_read, report.rows_used + report.rows_bad);
  EXPECT_TRUE(s.spec.cpu_request && s.spec.memory_request);
  if (!s.spec.cpu_request || !s.spec.memory_request) return s;
  EXPECT_GE(*s.spec.cpu_request, 1);
  EXPECT_LE(*s.spec.cpu_request, 64);
  EXPECT_GE(*s.spec.memory_request, 256.0 * 1024 * 1024);
  EXPECT_LE(*s.spec.memory_request, 1024.0 * 1024 * 1024 * 1024);
  // July 2013 (30 days from 2013-06-30 22:03 UTC), strictly increasing.
  EXPECT_GE(s.samples.front().timestamp, 1372629804);
  EXPECT_LE(s.samples.back().timestamp, 1372629804 + 32 * 86400);
  for (size_t i = 1; i < s.samples.size(); ++i) {
    if (s.samples[i - 1].timestamp >= s.samples[i].timestamp) {
      ADD_FAILURE() << "timestamps not increasing at " << i;
      break;
    }
  }
  for (const auto& p : s.samples) {
    if (p.cpu_cores < 0 || p.cpu_cores > *s.spec.cpu_request * 1.5 || p.memory_bytes < 0 ||
        p.memory_bytes > *s.spec.memory_request * 1.5) {  // usage can exceed nominal MHz a little (turbo)
      ADD_FAILURE() << "implausible sample at " << p.timestamp << ": " << p.cpu_cores << " cores, " << p.memory_bytes
                    << " bytes";
      break;
    }
  }
  EXPECT_EQ(s.samples.front().timestamp, 1372629804);
  return s;
}

TEST(Bitbrains, DerivedSampleInTheRepository) {
  IngestReport report;
  const auto series = read_bitbrains(test::test_fixture_path("usage/bitbrains-sample/1.csv.gz"), report);
  const auto& s = expect_july_2013_vm1(series, report);
  // First row of the sample: 87.8 MHz of 5851.9989 MHz over 2 cores; 1034593 KB.
  EXPECT_NEAR(s.samples.front().cpu_cores, 87.8 / (5851.9989 / 2), 1e-12);
  EXPECT_NEAR(s.samples.front().memory_bytes, 1034593.0 * 1024, 1e-3);
  // The whole sample folder: six VMs, each a long series.
  IngestReport all;
  const auto six = read_bitbrains(test::test_fixture_path("usage/bitbrains-sample"), all);
  EXPECT_EQ(six.size(), 6u);
  for (const auto& vm : six) EXPECT_GT(vm.samples.size(), 7000u) << vm.key.to_string();
}

TEST(Bitbrains, RealSharedTrace) {
  const fs::path file = test::bitbrains_trace_dir() / "1.csv.gz";
  SIZEGUARD_SKIP_WITHOUT(file);
  IngestReport report;
  const auto series = read_bitbrains(file, report);  // kept: the check returns a reference into it
  const auto& s = expect_july_2013_vm1(series, report);
  // First row of 1.csv: 87.7799835 MHz of 5851.9989 MHz over 2 cores; 1034592.8 KB.
  EXPECT_NEAR(s.samples.front().cpu_cores, 87.7799835 / (5851.9989 / 2), 1e-12);
  EXPECT_NEAR(s.samples.front().memory_bytes, 1034592.8 * 1024, 1e-3);
}

// All 500 VMs: every file reads, and what cannot be used is counted, not dropped silently.
TEST(Bitbrains, WholeSharedTrace) {
  const fs::path dir = test::bitbrains_trace_dir();
  SIZEGUARD_SKIP_WITHOUT(dir);
  IngestReport report;
  const auto series = read_bitbrains(dir, report);
  EXPECT_GE(series.size(), 450u);
  EXPECT_LE(series.size(), 500u);
  EXPECT_GT(report.rows_read, 3'500'000u);
  EXPECT_EQ(report.rows_read, report.rows_used + report.rows_bad);
  for (const auto& s : series) {
    ASSERT_FALSE(s.samples.empty()) << s.key.to_string();
    for (const auto& p : s.samples) {
      ASSERT_TRUE(std::isfinite(p.cpu_cores) && p.cpu_cores >= 0) << s.key.to_string();
      ASSERT_TRUE(std::isfinite(p.memory_bytes) && p.memory_bytes >= 0) << s.key.to_string();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Prometheus pod -> workload grouping (the HTTP side is tests/integration/prometheus_test.cpp)

TEST(PodGrouping, FromKubePodOwner) {
  EXPECT_EQ(workload_from_owner("ReplicaSet", "web-7d4b9c", "web-7d4b9c-x7k2p"), (WorkloadRef{"Deployment", "web"}));
  EXPECT_EQ(workload_from_owner("ReplicaSet", "api-server-5f6b8d9c47", "p"), (WorkloadRef{"Deployment", "api-server"}));
  EXPECT_EQ(workload_from_owner("ReplicaSet", "standalone", "p"), (WorkloadRef{"ReplicaSet", "standalone"}));
  EXPECT_EQ(workload_from_owner("StatefulSet", "db", "db-0"), (WorkloadRef{"StatefulSet", "db"}));
  EXPECT_EQ(workload_from_owner("DaemonSet", "fluentd", "fluentd-x7k2p"), (WorkloadRef{"DaemonSet", "fluentd"}));
  EXPECT_EQ(workload_from_owner("Job", "migrate", "migrate-x7k2p"), (WorkloadRef{"Job", "migrate"}));
  EXPECT_EQ(workload_from_owner("Job", "backup-28391040", "backup-28391040-x7k2p"), (WorkloadRef{"CronJob", "backup"}));
  EXPECT_EQ(workload_from_owner("<none>", "<none>", "toolbox"), (WorkloadRef{"Pod", "toolbox"}));
  EXPECT_EQ(workload_from_owner("Node", "node-1", "etcd-node-1"), (WorkloadRef{"Pod", "etcd-node-1"}));
}

TEST(PodGrouping, FromPodName) {
  EXPECT_EQ(workload_from_pod_name("web-7d4b9c-x7k2p"), (WorkloadRef{"Deployment", "web"}));
  EXPECT_EQ(workload_from_pod_name("my-api-5f6b8d9c47-q9z5w"), (WorkloadRef{"Deployment", "my-api"}));
  EXPECT_EQ(workload_from_pod_name("db-0"), (WorkloadRef{"StatefulSet", "db"}));
  EXPECT_EQ(workload_from_pod_name("kafka-broker-12"), (WorkloadRef{"StatefulSet", "kafka-broker"}));
  EXPECT_EQ(workload_from_pod_name("web-abcdef-x7k2p"), (WorkloadRef{"Pod", "web-abcdef-x7k2p"}));  // a, e: not a hash
  EXPECT_EQ(workload_from_pod_name("fluentd-x7k2p"), (WorkloadRef{"Pod", "fluentd-x7k2p"}));
  EXPECT_EQ(workload_from_pod_name("toolbox"), (WorkloadRef{"Pod", "toolbox"}));
  EXPECT_EQ(workload_from_pod_name("db-01"), (WorkloadRef{"Pod", "db-01"}));
}

}  // namespace
}  // namespace sizeguard
