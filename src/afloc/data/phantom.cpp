#include "afloc/data/phantom.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <random>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/common/strings.h"

namespace afloc::data::phantom {
namespace {

constexpr double kPi = 3.14159265358979323846;

// A portable generator: std::uniform_real_distribution differs between standard libraries, and a
// seed must render the same study everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL) {}
  double uniform() { return static_cast<double>(g_() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  int integer(int lo, int hi) { return lo + static_cast<int>(uniform() * (hi - lo + 1)) % (hi - lo + 1); }
  bool chance(double p) { return uniform() < p; }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(integer(0, static_cast<int>(v.size()) - 1))];
  }
  uint64_t next() { return g_(); }

 private:
  std::mt19937_64 g_;
};

// Side 0 = the patient's right = the image's left (radiological convention); side 1 = left.
struct Anatomy {
  double s = 224;
  double body_cx, body_cy, body_rx, body_ry;
  std::array<double, 2> lung_cx, lung_cy, lung_rx, lung_ry, dome_top, dome_curv;
  double heart_cx, heart_cy, heart_rx, heart_ry;
  double med_half;
};

Anatomy make_anatomy(Rng& r, double s, bool cardiomegaly, std::array<double, 2> dome_raise) {
  Anatomy a;
  a.s = s;
  a.body_cx = s * r.uniform(0.49, 0.51);
  a.body_cy = s * r.uniform(0.56, 0.62);
  a.body_rx = s * r.uniform(0.43, 0.48);
  a.body_ry = s * r.uniform(0.56, 0.62);
  const double spread = r.uniform(0.18, 0.21), rx = r.uniform(0.135, 0.155), ry = r.uniform(0.30, 0.34);
  const double cy = r.uniform(0.44, 0.48);
  for (int side = 0; side < 2; ++side) {
    a.lung_cx[side] = s * (0.5 + (side == 0 ? -spread : spread) + r.uniform(-0.008, 0.008));
    a.lung_rx[side] = s * (rx + r.uniform(-0.008, 0.008));
    a.lung_cy[side] = s * (cy + r.uniform(-0.01, 0.01));
    a.lung_ry[side] = s * (ry + r.uniform(-0.01, 0.01));
    // The right hemidiaphragm sits a little higher than the left.
    a.dome_top[side] = s * ((side == 0 ? 0.655 : 0.685) + r.uniform(-0.02, 0.02) - dome_raise[side]);
    a.dome_curv[side] = s * r.uniform(0.08, 0.12);
  }
  a.med_half = s * r.uniform(0.055, 0.07);
  a.heart_cx = s * r.uniform(0.535, 0.56);
  a.heart_cy = s * r.uniform(0.60, 0.64);
  // Normal cardiothoracic ratio ~0.42-0.48; cardiomegaly 0.58-0.68 (thorax width ~0.78 s).
  const double ctr = cardiomegaly ? r.uniform(0.58, 0.68) : r.uniform(0.40, 0.47);
  a.heart_rx = s * 0.78 * ctr / 2.0;
  a.heart_ry = s * (cardiomegaly ? r.uniform(0.13, 0.15) : r.uniform(0.10, 0.12));
  return a;
}

double sq(double v) { return v * v; }

double dome_y(const Anatomy& a, int side, double x) {
  return a.dome_top[side] + a.dome_curv[side] * sq((x - a.lung_cx[side]) / a.lung_rx[side]);
}

bool in_ellipse(double x, double y, double cx, double cy, double rx, double ry) {
  return sq((x - cx) / rx) + sq((y - cy) / ry) <= 1.0;
}

// Smooth 0..1 low-frequency noise: random values on a coarse grid, resized with bicubic.
cv::Mat1f low_noise(Rng& r, int s, int grid) {
  cv::Mat1f g(grid, grid);
  for (int i = 0; i < grid; ++i)
    for (int j = 0; j < grid; ++j) g(i, j) = static_cast<float>(r.uniform());
  cv::Mat1f out;
  cv::resize(g, out, cv::Size(s, s), 0, 0, cv::INTER_CUBIC);
  return out;
}

struct Lungs {
  std::array<cv::Mat1b, 2> mask;
  std::array<cv::Mat1f, 2> dist;  // distance to the lung's border, pixels
  std::array<double, 2> top, bottom, left, right;
};

Lungs make_lungs(const Anatomy& a, int s) {
  Lungs l;
  for (int side = 0; side < 2; ++side) {
    l.mask[side] = cv::Mat1b::zeros(s, s);
    l.top[side] = s;
    l.bottom[side] = 0;
    l.left[side] = s;
    l.right[side] = 0;
    for (int y = 0; y < s; ++y) {
      for (int x = 0; x < s; ++x) {
        const double px = x + 0.5, py = y + 0.5;
        if (!in_ellipse(px, py, a.lung_cx[side], a.lung_cy[side], a.lung_rx[side], a.lung_ry[side])) continue;
        if (py > dome_y(a, side, px)) continue;
        if (std::abs(px - a.s / 2) < a.med_half) continue;
        // The visible lung stops at the heart border.
        if (in_ellipse(px, py, a.heart_cx, a.heart_cy, a.heart_rx, a.heart_ry)) continue;
        l.mask[side](y, x) = 1;
        l.top[side] = std::min<double>(l.top[side], y);
        l.bottom[side] = std::max<double>(l.bottom[side], y);
        l.left[side] = std::min<double>(l.left[side], x);
        l.right[side] = std::max<double>(l.right[side], x);
      }
    }
    cv::Mat1b padded;
    cv::copyMakeBorder(l.mask[side], padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, 0);
    cv::Mat1f d;
    cv::distanceTransform(padded, d, cv::DIST_L2, cv::DIST_MASK_PRECISE);
    l.dist[side] = d(cv::Rect(1, 1, s, s)).clone();
  }
  return l;
}

// Zone bands within a lung's vertical extent.
std::pair<double, double> zone_rows(const Lungs& l, int side, const std::string& zone) {
  const double t = l.top[side], h = l.bottom[side] - l.top[side];
  if (zone == "upper") return {t, t + 0.36 * h};
  if (zone == "middle") return {t + 0.33 * h, t + 0.66 * h};
  return {t + 0.62 * h, t + h};
}

// A point inside the lung, in the zone, at least `margin` pixels from the lung's border.
cv::Point2d sample_point(Rng& r, const Lungs& l, int side, const std::string& zone, double margin) {
  const auto [y0, y1] = zone_rows(l, side, zone);
  cv::Point2d best(0.5 * (l.left[side] + l.right[side]), 0.5 * (y0 + y1));
  double best_d = -1;
  for (int i = 0; i < 300; ++i) {
    const double x = r.uniform(l.left[side], l.right[side]), y = r.uniform(y0, y1);
    const int xi = static_cast<int>(x), yi = static_cast<int>(y);
    const float d = l.dist[side](yi, xi);
    if (d >= margin) return {x, y};
    if (d > best_d) {
      best_d = d;
      best = {x, y};
    }
  }
  return best;
}

std::string cap(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

std::string side_word(int side) { return side == 0 ? "right" : "left"; }

// Words for a lung zone, varied the way radiologists vary them.
std::string zone_phrase(Rng& r, int side, const std::string& zone) {
  const std::string sd = side_word(side);
  if (zone == "upper") return r.pick<std::string>({sd + " upper lobe", sd + " upper zone", sd + " apical", sd + " upper lung"});
  if (zone == "middle") {
    if (side == 0) return r.pick<std::string>({"right middle lobe", "right mid lung", "right perihilar", "right mid zone"});
    return r.pick<std::string>({"lingula", "left mid lung", "left perihilar", "left mid zone"});
  }
  return r.pick<std::string>({sd + " lower lobe", sd + " base", sd + " basilar region", sd + " lower zone", sd + " lung base"});
}

void bbox_of(const cv::Mat1b& m, int x0, int x1, std::vector<Box>& boxes) {
  int minx = INT32_MAX, miny = INT32_MAX, maxx = -1, maxy = -1;
  for (int y = 0; y < m.rows; ++y)
    for (int x = x0; x < x1; ++x)
      if (m(y, x)) {
        minx = std::min(minx, x);
        maxx = std::max(maxx, x);
        miny = std::min(miny, y);
        maxy = std::max(maxy, y);
      }
  if (maxx >= 0) boxes.push_back({minx, miny, maxx - minx + 1, maxy - miny + 1});
}

Mask to_mask(const cv::Mat1b& m) {
  Mask out;
  out.height = m.rows;
  out.width = m.cols;
  out.pixels.assign(m.begin(), m.end());
  for (auto& v : out.pixels) v = v != 0;
  return out;
}

// Rendering state: the density layers that are composed at the end.
struct Canvas {
  int s;
  cv::Mat1f base;      // body, lungs, mediastinum, heart, findings
  cv::Mat1f markings;  // lung vessels (absent where a pneumothorax is)
  cv::Mat1f ribs;
  cv::Mat1f no_markings;  // 1 where markings are suppressed
};

struct Planned {
  Finding finding;
  int side;  // 0, 1, or 2 = bilateral
  std::string zone, severity;
};

}  // namespace

std::vector<Finding> seen_findings() {
  return {Finding::kEffusion, Finding::kPneumothorax, Finding::kConsolidation, Finding::kNodule,
          Finding::kMass,     Finding::kAtelectasis,  Finding::kEdema,         Finding::kCardiomegaly};
}

std::string category(Finding f) {
  switch (f) {
    case Finding::kEffusion: return "Pleural Effusion";
    case Finding::kPneumothorax: return "Pneumothorax";
    case Finding::kConsolidation: return "Consolidation";
    case Finding::kNodule: return "Nodule";
    case Finding::kMass: return "Mass";
    case Finding::kAtelectasis: return "Atelectasis";
    case Finding::kEdema: return "Edema";
    case Finding::kCardiomegaly: return "Cardiomegaly";
    case Finding::kGroundGlass: return "Ground Glass Opacity";
  }
  return "";
}

std::string prompt_name(Finding f) { return ascii_lower(category(f)); }

std::string chexlocalize_task(Finding f) {
  switch (f) {
    case Finding::kNodule:
    case Finding::kMass: return "Lung Lesion";
    case Finding::kGroundGlass: return "Airspace Opacity";
    default: return category(f);
  }
}

Finding parse_finding(const std::string& name) {
  const std::string n = ascii_lower(name);
  std::string names;
  for (int i = 0; i < kNumFindings; ++i) {
    const auto f = static_cast<Finding>(i);
    if (n == prompt_name(f)) return f;
    names += (names.empty() ? "" : ", ") + prompt_name(f);
  }
  throw Error("unknown phantom finding '" + name + "' (known: " + names + ")");
}

std::string Study::report() const {
  return "FINDINGS: " + findings + "\n\nIMPRESSION: " + impression + "\n";
}

Study render_study(uint64_t seed, const PhantomOptions& o) {
  if (o.size < 64 || o.size > 4096) throw Error("phantom size " + std::to_string(o.size) + ": expected 64..4096");
  Rng r(seed);
  const int s = static_cast<int>(o.size);
  const double S = static_cast<double>(s);

  // --- choose the findings first: some change the anatomy (cardiomegaly, volume loss) ------------
  std::vector<Planned> plan;
  if (o.unseen) {
    plan.push_back({Finding::kGroundGlass, 2, "lower", r.pick<std::string>({"mild", "moderate", "extensive"})});
  } else if (!r.chance(o.normal_fraction)) {
    const double u = r.uniform();
    int n = u < 0.55 ? 1 : (u < 0.87 ? 2 : 3);
    n = std::min(n, o.max_findings);
    std::vector<Finding> pool = seen_findings();
    for (int k = 0; k < n && !pool.empty(); ++k) {
      const size_t i = static_cast<size_t>(r.integer(0, static_cast<int>(pool.size()) - 1));
      const Finding f = pool[i];
      pool.erase(pool.begin() + static_cast<long>(i));
      // Nodule and mass are one lesion at two sizes: never both.
      if (f == Finding::kNodule || f == Finding::kMass) {
        pool.erase(std::remove_if(pool.begin(), pool.end(),
                                  [](Finding g) { return g == Finding::kNodule || g == Finding::kMass; }),
                   pool.end());
      }
      Planned p{f, r.integer(0, 1), "", ""};
      switch (f) {
        case Finding::kEffusion:
          p.side = r.chance(0.25) ? 2 : p.side;
          p.zone = "base";
          p.severity = r.pick<std::string>({"small", "small", "moderate", "large"});
          break;
        case Finding::kPneumothorax:
          p.zone = r.chance(0.6) ? "apex" : "lateral";
          p.severity = r.pick<std::string>({"small", "moderate", "large"});
          break;
        case Finding::kConsolidation: p.zone = r.pick<std::string>({"upper", "middle", "lower", "lower"}); break;
        case Finding::kNodule:
        case Finding::kMass: p.zone = r.pick<std::string>({"upper", "middle", "lower"}); break;
        case Finding::kAtelectasis:
          p.zone = r.chance(0.85) ? "lower" : "middle";
          break;
        case Finding::kEdema:
          p.side = 2;
          p.zone = "perihilar";
          p.severity = r.pick<std::string>({"mild", "moderate", "severe"});
          break;
        case Finding::kCardiomegaly:
          p.side = 2;
          p.zone = "heart";
          p.severity = r.pick<std::string>({"mild", "moderate", "severe"});
          break;
        case Finding::kGroundGlass: break;
      }
      plan.push_back(p);
    }
  }
  // A pneumothorax and an effusion on the same side would be a hydropneumothorax; keep them apart.
  for (auto& p : plan) {
    if (p.finding != Finding::kEffusion || p.side == 2) continue;
    for (const auto& q : plan)
      if (q.finding == Finding::kPneumothorax && q.side == p.side) p.side = 1 - p.side;
  }
  bool cardiomegaly = false;
  std::array<double, 2> dome_raise{0, 0};
  for (const auto& p : plan) {
    if (p.finding == Finding::kCardiomegaly) cardiomegaly = true;
    if (p.finding == Finding::kAtelectasis && p.zone == "lower" && r.chance(0.5)) dome_raise[p.side] = r.uniform(0.015, 0.03);
  }

  const Anatomy a = make_anatomy(r, S, cardiomegaly, dome_raise);
  const Lungs lungs = make_lungs(a, s);
  cv::Mat1b lung_any = lungs.mask[0] | lungs.mask[1];

  // --- anatomy -------------------------------------------------------------------------------------
  Canvas c{s, cv::Mat1f(s, s, 0.03f), cv::Mat1f::zeros(s, s), cv::Mat1f::zeros(s, s), cv::Mat1f::zeros(s, s)};
  const double soft = r.uniform(0.46, 0.54), lung_level = r.uniform(0.12, 0.18);
  const cv::Mat1f tissue_noise = low_noise(r, s, 6);
  for (int y = 0; y < s; ++y) {
    for (int x = 0; x < s; ++x) {
      const double px = x + 0.5, py = y + 0.5;
      // A squarish outline (superellipse): shoulders and flanks rather than an egg.
      const double e = std::pow(std::abs(px - a.body_cx) / a.body_rx, 2.8) + std::pow(std::abs(py - a.body_cy) / a.body_ry, 2.4);
      if (e > 1.0) continue;
      // Soft tissue thins towards the body's edge.
      double v = soft * (0.75 + 0.25 * std::sqrt(std::max(0.0, 1.0 - e))) + 0.05 * (tissue_noise(y, x) - 0.5);
      if (lung_any(y, x)) {
        // Lungs are darker at the periphery and the apices are a little denser.
        const int side = lungs.mask[0](y, x) ? 0 : 1;
        const double ny = (py - lungs.top[side]) / std::max(1.0, lungs.bottom[side] - lungs.top[side]);
        v = lung_level + 0.05 * (1.0 - ny) + 0.04 * std::min(1.0, 3.0 / (1.0 + lungs.dist[side](y, x) / (0.03 * S)));
      }
      c.base(y, x) = static_cast<float>(v);
    }
  }
  // Mediastinum, trachea, spine.
  for (int y = 0; y < s; ++y) {
    const double py = y + 0.5;
    if (py < 0.06 * S || py > a.body_cy + 0.9 * a.body_ry) continue;
    for (int x = 0; x < s; ++x) {
      const double dx = std::abs(x + 0.5 - S / 2);
      if (dx < a.med_half * (py < 0.3 * S ? 0.8 : 1.0)) c.base(y, x) = std::max(c.base(y, x), static_cast<float>(soft + 0.08));
      if (dx < 0.028 * S) {
        // Vertebral bodies: brighter blocks separated by disc spaces.
        const double period = 0.055 * S;
        const double phase = std::fmod(py, period) / period;
        c.base(y, x) += static_cast<float>(phase < 0.82 ? 0.12 : 0.04);
      }
      if (py < a.lung_cy[0] - 0.05 * S && dx < 0.012 * S) c.base(y, x) -= 0.18f;  // trachea (air)
    }
  }
  // Heart shadow.
  for (int y = 0; y < s; ++y)
    for (int x = 0; x < s; ++x) {
      const double e = sq((x + 0.5 - a.heart_cx) / a.heart_rx) + sq((y + 0.5 - a.heart_cy) / a.heart_ry);
      if (e < 1.0) {
        const double edge = std::min(1.0, (1.0 - e) * 6.0);
        c.base(y, x) = static_cast<float>(c.base(y, x) * (1 - edge) + (soft + 0.1) * edge);
      }
    }
  // Gastric bubble under the left hemidiaphragm.
  if (r.chance(0.7)) {
    cv::ellipse(c.base, cv::Point(static_cast<int>(a.lung_cx[1]), static_cast<int>(a.dome_top[1] + 0.07 * S)),
                cv::Size(static_cast<int>(0.045 * S), static_cast<int>(0.025 * S)), 0, 0, 360,
                cv::Scalar(soft - 0.25), -1, cv::LINE_AA);
  }
  // Ribs: posterior arcs across each hemithorax, faint, with clavicles on top.
  const double rib_gap = r.uniform(0.058, 0.068) * S, rib_th = std::max(1.0, 0.014 * S);
  for (int side = 0; side < 2; ++side) {
    const double dir = side == 0 ? -1 : 1;
    for (int k = 0; k < 10; ++k) {
      std::vector<cv::Point> pts;
      const double y0 = lungs.top[side] + k * rib_gap - 0.02 * S;
      for (int t = 0; t <= 20; ++t) {
        const double u = t / 20.0;
        const double x = S / 2 + dir * (0.03 * S + u * (a.lung_rx[side] * 2.3));
        const double y = y0 - 0.045 * S * std::sin(u * kPi * 0.9) + 0.11 * S * u * u;
        pts.emplace_back(static_cast<int>(x), static_cast<int>(y));
      }
      cv::polylines(c.ribs, pts, false, cv::Scalar(0.045), static_cast<int>(rib_th), cv::LINE_AA);
    }
    const cv::Point c0(static_cast<int>(S / 2 + dir * 0.04 * S), static_cast<int>(0.17 * S));
    const cv::Point c1(static_cast<int>(S / 2 + dir * 0.33 * S), static_cast<int>(0.11 * S));
    cv::line(c.ribs, c0, c1, cv::Scalar(0.14), static_cast<int>(std::max(2.0, 0.022 * S)), cv::LINE_AA);
  }
  cv::GaussianBlur(c.ribs, c.ribs, cv::Size(0, 0), 0.6 * S / 224);
  // Vessels branching out of each hilum.
  for (int side = 0; side < 2; ++side) {
    const double dir = side == 0 ? -1 : 1;
    const cv::Point2d hilum(S / 2 + dir * (a.med_half + 0.02 * S), a.lung_cy[side]);
    for (int k = 0; k < 14; ++k) {
      double ang = r.uniform(-0.45 * kPi, 0.55 * kPi);
      cv::Point2d p = hilum;
      double len = r.uniform(0.10, 0.26) * S, th = std::max(1.0, 0.009 * S);
      for (int seg = 0; seg < 4; ++seg) {
        const cv::Point2d q(p.x + dir * std::cos(ang) * len / 4, p.y - std::sin(ang) * len / 4);
        cv::line(c.markings, p, q, cv::Scalar(0.07), static_cast<int>(th), cv::LINE_AA);
        p = q;
        ang += r.uniform(-0.25, 0.25);
        th = std::max(1.0, th * 0.8);
      }
    }
  }
  cv::GaussianBlur(c.markings, c.markings, cv::Size(0, 0), 0.7 * S / 224);
  cv::Mat1f lung_f;
  lung_any.convertTo(lung_f, CV_32F);
  cv::multiply(c.markings, lung_f, c.markings);

  // --- findings -------------------------------------------------------------------------------------
  Study st;
  st.size = s;
  for (const auto& p : plan) {
    Instance inst;
    inst.finding = p.finding;
    inst.side = p.side == 2 ? "bilateral" : side_word(p.side);
    inst.zone = p.zone;
    inst.severity = p.severity;
    cv::Mat1f alpha = cv::Mat1f::zeros(s, s);
    cv::Mat1b m = cv::Mat1b::zeros(s, s);
    const std::vector<int> sides = p.side == 2 ? std::vector<int>{0, 1} : std::vector<int>{p.side};
    switch (p.finding) {
      case Finding::kEffusion: {
        const double frac = p.severity == "small" ? r.uniform(0.10, 0.16)
                                                  : (p.severity == "moderate" ? r.uniform(0.2, 0.3) : r.uniform(0.35, 0.45));
        for (int sd : sides) {
          const double h = lungs.bottom[sd] - lungs.top[sd];
          const double level = lungs.bottom[sd] - frac * h;
          const double lateral_x = sd == 0 ? lungs.left[sd] : lungs.right[sd];
          const double width = lungs.right[sd] - lungs.left[sd];
          for (int y = 0; y < s; ++y)
            for (int x = 0; x < s; ++x) {
              if (!lungs.mask[sd](y, x)) continue;
              // Meniscus: the fluid climbs the lateral chest wall.
              const double t = std::abs(x + 0.5 - lateral_x) / std::max(1.0, width);
              const double top = level - 0.12 * h * sq(std::max(0.0, 1.0 - 2.0 * t));
              const double v = std::clamp((y + 0.5 - top) / (0.015 * S) + 0.5, 0.0, 1.0);
              alpha(y, x) = static_cast<float>(v);
            }
        }
        cv::GaussianBlur(alpha, alpha, cv::Size(0, 0), 0.8 * S / 224);
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            const float av = alpha(y, x) * static_cast<float>(lung_any(y, x));
            c.base(y, x) = c.base(y, x) * (1 - av) + static_cast<float>(soft + 0.02) * av;
            c.no_markings(y, x) = std::max(c.no_markings(y, x), av);
            m(y, x) = av >= 0.5f;
          }
        break;
      }
      case Finding::kPneumothorax: {
        const int sd = p.side;
        const double w = (p.severity == "small" ? r.uniform(0.018, 0.028)
                                                : (p.severity == "moderate" ? r.uniform(0.03, 0.045) : r.uniform(0.05, 0.07))) * S;
        const double t0 = lungs.top[sd], h = lungs.bottom[sd] - lungs.top[sd];
        const double frac = r.uniform(0.4, 0.55);
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            if (!lungs.mask[sd](y, x)) continue;
            const double ny = (y + 0.5 - t0) / h;
            double taper = 0;
            if (p.zone == "apex") {
              taper = ny < frac ? std::sqrt(std::max(0.0, 1.0 - ny / frac)) : 0.0;
            } else {
              const bool lateral = sd == 0 ? x + 0.5 < a.lung_cx[sd] : x + 0.5 > a.lung_cx[sd];
              taper = lateral && ny < 0.85 ? std::sin(kPi * std::min(1.0, ny / 0.85)) : 0.0;
            }
            const double we = w * taper;
            if (we < 1.0) continue;
            const double d = lungs.dist[sd](y, x);
            if (d < we) {
              m(y, x) = 1;
              c.base(y, x) = static_cast<float>(lung_level * 0.35);
              c.no_markings(y, x) = 1.0f;
            } else if (d < we + std::max(1.0, 0.006 * S)) {
              c.base(y, x) += 0.22f;  // visceral pleural line
            }
          }
        // The collapsed lung is a little denser.
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x)
            if (lungs.mask[sd](y, x) && !m(y, x)) c.base(y, x) += 0.02f;
        break;
      }
      case Finding::kConsolidation:
      case Finding::kGroundGlass: {
        const bool gg = p.finding == Finding::kGroundGlass;
        for (int sd : sides) {
          const std::string zone = gg ? (r.chance(0.5) ? "lower" : "middle") : p.zone;
          const cv::Point2d centre = sample_point(r, lungs, sd, zone, gg ? 0.02 * S : 0.04 * S);
          const int blobs = r.integer(4, 8);
          for (int b = 0; b < blobs; ++b) {
            const cv::Point2d q(centre.x + r.normal() * 0.03 * S, centre.y + r.normal() * 0.03 * S);
            const double rad = r.uniform(0.022, 0.045) * S;
            for (int y = std::max(0, static_cast<int>(q.y - 3 * rad)); y < std::min(s, static_cast<int>(q.y + 3 * rad)); ++y)
              for (int x = std::max(0, static_cast<int>(q.x - 3 * rad)); x < std::min(s, static_cast<int>(q.x + 3 * rad)); ++x)
                alpha(y, x) += static_cast<float>(0.7 * std::exp(-(sq(x + 0.5 - q.x) + sq(y + 0.5 - q.y)) / (2 * rad * rad)));
          }
        }
        const cv::Mat1f tex = low_noise(r, s, std::max(8, s / 14));
        cv::Mat1f bronch = cv::Mat1f::zeros(s, s);
        if (!gg) {
          // Air bronchograms: dark branching tubes inside the densest part.
          for (int sd : sides) {
            (void)sd;
            cv::Point maxp;
            cv::minMaxLoc(alpha, nullptr, nullptr, nullptr, &maxp);
            for (int k = 0; k < 3; ++k) {
              double ang = r.uniform(0, 2 * kPi);
              cv::Point2d pp(maxp.x, maxp.y);
              for (int seg = 0; seg < 3; ++seg) {
                const cv::Point2d qq(pp.x + std::cos(ang) * 0.02 * S, pp.y + std::sin(ang) * 0.02 * S);
                cv::line(bronch, pp, qq, cv::Scalar(1.0), 1, cv::LINE_AA);
                pp = qq;
                ang += r.uniform(-0.5, 0.5);
              }
            }
          }
        }
        const double peak = gg ? (p.severity == "mild" ? 0.12 : (p.severity == "moderate" ? 0.16 : 0.2)) : r.uniform(0.26, 0.34);
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            const float av = std::min(1.0f, alpha(y, x) * (0.75f + 0.5f * tex(y, x))) * static_cast<float>(lung_any(y, x));
            c.base(y, x) += static_cast<float>(peak * av) - 0.1f * bronch(y, x) * (av > 0.5f ? 1.0f : 0.0f);
            c.no_markings(y, x) = std::max(c.no_markings(y, x), 0.5f * av);
            m(y, x) = av >= 0.45f;
          }
        break;
      }
      case Finding::kNodule:
      case Finding::kMass: {
        const bool mass = p.finding == Finding::kMass;
        const double rad = (mass ? r.uniform(0.045, 0.07) : r.uniform(0.016, 0.03)) * S;
        const cv::Point2d ctr = sample_point(r, lungs, p.side, p.zone, rad + 0.01 * S);
        const double bright = mass ? r.uniform(0.28, 0.34) : r.uniform(0.3, 0.38);
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            // Slightly lobulated outline.
            const double ang = std::atan2(y + 0.5 - ctr.y, x + 0.5 - ctr.x);
            const double rr = rad * (1.0 + 0.08 * std::sin(3 * ang + static_cast<double>(seed % 7)));
            const double d = std::sqrt(sq(x + 0.5 - ctr.x) + sq(y + 0.5 - ctr.y));
            const double av = std::clamp((rr - d) / std::max(1.0, 0.006 * S) + 0.5, 0.0, 1.0) * lung_any(y, x);
            c.base(y, x) += static_cast<float>(bright * av * (0.85 + 0.15 * (1 - d / rr)));
            m(y, x) = av >= 0.5;
          }
        break;
      }
      case Finding::kAtelectasis: {
        const cv::Point2d ctr = sample_point(r, lungs, p.side, p.zone, 0.03 * S);
        const double len = r.uniform(0.06, 0.1) * S, th = r.uniform(0.012, 0.022) * S;
        const double ang = (p.side == 0 ? -1 : 1) * r.uniform(5, 28);
        cv::ellipse(alpha, cv::Point(static_cast<int>(ctr.x), static_cast<int>(ctr.y)),
                    cv::Size(static_cast<int>(len), static_cast<int>(th)), ang, 0, 360, cv::Scalar(1.0), -1, cv::LINE_AA);
        cv::GaussianBlur(alpha, alpha, cv::Size(0, 0), 0.9 * S / 224);
        const double bright = r.uniform(0.24, 0.3);
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            const float av = alpha(y, x) * static_cast<float>(lung_any(y, x));
            c.base(y, x) += static_cast<float>(bright) * av;
            m(y, x) = av >= 0.5f;
          }
        break;
      }
      case Finding::kEdema: {
        const double peak = p.severity == "mild" ? 0.14 : (p.severity == "moderate" ? 0.19 : 0.24);
        const double sig = r.uniform(0.075, 0.095) * S;
        const cv::Mat1f tex = low_noise(r, s, std::max(8, s / 10));
        for (int sd : {0, 1}) {
          const double dir = sd == 0 ? -1 : 1;
          const cv::Point2d h(S / 2 + dir * (a.med_half + 0.035 * S), a.lung_cy[sd] + 0.02 * S);
          for (int y = 0; y < s; ++y)
            for (int x = 0; x < s; ++x) {
              if (!lungs.mask[sd](y, x)) continue;
              // Bat-wing: wider than tall, fading to the periphery.
              alpha(y, x) = static_cast<float>(std::exp(-(sq(x + 0.5 - h.x) / (2 * sq(1.3 * sig)) + sq(y + 0.5 - h.y) / (2 * sig * sig))));
            }
        }
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            const float av = alpha(y, x) * (0.8f + 0.4f * tex(y, x));
            c.base(y, x) += static_cast<float>(peak) * av;
            c.no_markings(y, x) = std::max(c.no_markings(y, x), 0.4f * av);
            m(y, x) = alpha(y, x) >= 0.5f;
          }
        break;
      }
      case Finding::kCardiomegaly: {
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x)
            m(y, x) = sq((x + 0.5 - a.heart_cx) / a.heart_rx) + sq((y + 0.5 - a.heart_cy) / a.heart_ry) < 1.0;
        break;
      }
    }
    if (cv::countNonZero(m) == 0) continue;  // nothing visible: the report will not mention it
    inst.mask = to_mask(m);
    if (p.side == 2) {
      if (p.finding == Finding::kCardiomegaly) {
        bbox_of(m, 0, s, inst.boxes);
      } else {
        bbox_of(m, 0, s / 2, inst.boxes);
        bbox_of(m, s / 2, s, inst.boxes);
      }
    } else {
      bbox_of(m, 0, s, inst.boxes);
    }
    st.instances.push_back(std::move(inst));
  }

  // --- acquisition: compose, contrast, blur, noise ---------------------------------------------------
  cv::Mat1f img(s, s);
  for (int y = 0; y < s; ++y)
    for (int x = 0; x < s; ++x)
      img(y, x) = c.base(y, x) + c.ribs(y, x) * static_cast<float>(lung_any(y, x) ? 1.0 : 0.5) +
                  c.markings(y, x) * (1.0f - std::min(1.0f, c.no_markings(y, x)));
  cv::GaussianBlur(img, img, cv::Size(0, 0), r.uniform(0.4, 1.1) * S / 224);
  const double gamma = r.uniform(0.8, 1.25), contrast = r.uniform(0.85, 1.15), bright = r.uniform(-0.05, 0.05);
  const double noise = r.uniform(0.008, 0.03);
  std::mt19937_64 ng(r.next());
  st.pixels.resize(static_cast<size_t>(s) * static_cast<size_t>(s));
  for (int y = 0; y < s; ++y)
    for (int x = 0; x < s; ++x) {
      const double n = static_cast<double>(static_cast<int64_t>(ng() >> 40) - (int64_t{1} << 23)) / (1 << 23);  // U(-1,1)
      double v = std::pow(std::clamp(static_cast<double>(img(y, x)), 0.0, 1.0), gamma) * contrast + bright + noise * 1.7 * n;
      st.pixels[static_cast<size_t>(y) * static_cast<size_t>(s) + static_cast<size_t>(x)] =
          static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255.0));
    }

  // --- the report -----------------------------------------------------------------------------------
  std::vector<std::string> finding_sents, impression;
  bool has[kNumFindings] = {};
  for (auto& inst : st.instances) {
    has[static_cast<int>(inst.finding)] = true;
    const int side = inst.side == "right" ? 0 : (inst.side == "left" ? 1 : 2);
    const std::string sd = inst.side, sev = inst.severity;
    const bool hedge = r.chance(0.08);
    std::string f, imp;
    switch (inst.finding) {
      case Finding::kEffusion:
        if (side == 2) {
          f = r.pick<std::string>({cap(sev) + " bilateral pleural effusions.",
                                   "There are " + sev + " bilateral pleural effusions with blunting of the costophrenic angles.",
                                   cap(sev) + " bilateral pleural effusions, right greater than left.",
                                   "Bilateral " + sev + " pleural effusions are present."});
          imp = cap(sev) + " bilateral pleural effusions.";
        } else {
          f = r.pick<std::string>({"There is a " + sev + " " + sd + " pleural effusion.",
                                   cap(sev) + " " + sd + " pleural effusion with blunting of the " + sd + " costophrenic angle.",
                                   cap(sev) + " " + sd + "-sided pleural fluid is seen.",
                                   "A " + sev + " " + sd + " effusion layers at the " + sd + " base."});
          imp = r.pick<std::string>({cap(sev) + " " + sd + " pleural effusion.", cap(sd) + " pleural effusion."});
        }
        break;
      case Finding::kPneumothorax: {
        const std::string where = inst.zone == "apex" ? r.pick<std::string>({"apical", "apex"}) : "lateral";
        if (where == "apex") {
          f = "There is a " + sev + " pneumothorax at the " + sd + " apex.";
        } else {
          f = r.pick<std::string>({"There is a " + sev + " " + sd + " " + where + " pneumothorax.",
                                   "A " + sev + " " + sd + " " + where + " pneumothorax is seen with a visible pleural line.",
                                   cap(sev) + " " + sd + " " + where + " pneumothorax."});
        }
        if (hedge) f = "Possible " + sev + " " + sd + " " + (where == "apex" ? "apical" : where) + " pneumothorax.";
        imp = r.pick<std::string>({cap(sev) + " " + sd + " pneumothorax.", cap(sd) + " pneumothorax."});
        break;
      }
      case Finding::kConsolidation: {
        const std::string z = zone_phrase(r, side, inst.zone);
        f = r.pick<std::string>({"Patchy airspace opacity in the " + z + " concerning for pneumonia.",
                                 "There is focal consolidation in the " + z + ".",
                                 cap(z) + " consolidation, likely pneumonia.",
                                 "New airspace consolidation in the " + z + " with air bronchograms."});
        if (hedge) f = "Opacity in the " + z + " may reflect early pneumonia.";
        imp = r.pick<std::string>({cap(z) + " consolidation.", cap(z) + " pneumonia."});
        break;
      }
      case Finding::kNodule: {
        const std::string z = zone_phrase(r, side, inst.zone);
        f = r.pick<std::string>({"A rounded nodule projects over the " + z + ".",
                                 "There is a well-defined nodule in the " + z + ".",
                                 "A small pulmonary nodule is noted in the " + z + "."});
        imp = cap(z) + " nodule, recommend CT for further evaluation.";
        break;
      }
      case Finding::kMass: {
        const std::string z = zone_phrase(r, side, inst.zone);
        f = r.pick<std::string>({"A large rounded mass is seen in the " + z + ".",
                                 "There is a mass in the " + z + ".",
                                 "A well-circumscribed mass occupies the " + z + "."});
        imp = cap(z) + " mass, concerning for malignancy.";
        break;
      }
      case Finding::kAtelectasis: {
        const std::string z = zone_phrase(r, side, inst.zone);
        f = r.pick<std::string>({"Linear opacity in the " + z + " compatible with atelectasis.",
                                 "Plate-like atelectasis in the " + z + ".",
                                 "There is subsegmental atelectasis in the " + z + "."});
        imp = cap(z) + " atelectasis.";
        break;
      }
      case Finding::kEdema:
        f = r.pick<std::string>({"Bilateral perihilar hazy opacities consistent with " + sev + " pulmonary edema.",
                                 "There is " + sev + " pulmonary edema.",
                                 "Perihilar haziness and vascular congestion reflect " + sev + " pulmonary edema."});
        imp = r.pick<std::string>({cap(sev) + " pulmonary edema.", cap(sev) + " interstitial edema."});
        break;
      case Finding::kCardiomegaly: {
        const std::string adv = sev == "mild" ? "mildly" : (sev == "moderate" ? "moderately" : "severely");
        f = r.pick<std::string>({"The heart is " + adv + " enlarged.", cap(sev) + " cardiomegaly.",
                                 "The cardiac silhouette is " + adv + " enlarged."});
        imp = cap(sev) + " cardiomegaly.";
        break;
      }
      case Finding::kGroundGlass: {
        // Never named in pretraining reports; the unseen set's reports describe it plainly.
        f = cap(sev) + " bilateral peripheral ground glass opacities in the lower lungs.";
        imp = "Bilateral ground glass opacities, consider viral pneumonia.";
        break;
      }
    }
    // Impressions often restate a finding as "Findings suggesting/consistent with ...", as MIMIC-CXR
    // reports do; this is also the wording of the paper's localization prompt ("Findings
    // suggesting {category}."), which a text encoder trained from scratch only understands if its
    // words occur in the archive (Bio_ClinicalBERT knows them from clinical text).
    if (inst.finding != Finding::kGroundGlass && r.chance(0.35)) {
      std::string core = imp.substr(0, std::min(imp.find(','), imp.size() - 1));  // drop ", clause" or "."
      if (!core.empty()) core[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(core[0])));
      imp = r.pick<std::string>({"Findings suggesting ", "Findings suggesting ", "Findings consistent with ",
                                 "Findings suggestive of "}) + core + ".";
    }
    inst.sentence = f;
    finding_sents.push_back(f);
    impression.push_back(imp);
  }
  auto has_f = [&](Finding f) { return has[static_cast<int>(f)]; };
  std::vector<std::string> normal;
  if (!has_f(Finding::kCardiomegaly)) {
    st.denied.push_back(Finding::kCardiomegaly);
    normal.push_back(r.pick<std::string>({"The heart size is normal.", "Heart size is normal.",
                                          "The cardiomediastinal silhouette is within normal limits.",
                                          "Cardiomediastinal contours are normal."}));
  }
  if (!has_f(Finding::kEffusion) && !has_f(Finding::kPneumothorax)) {
    st.denied.insert(st.denied.end(), {Finding::kEffusion, Finding::kPneumothorax});
    normal.push_back(r.pick<std::string>({"No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.",
                                          "No pneumothorax or pleural effusion is seen."}));
  } else if (!has_f(Finding::kEffusion)) {
    st.denied.push_back(Finding::kEffusion);
    normal.push_back(r.pick<std::string>({"No pleural effusion.", "There is no pleural effusion."}));
  } else if (!has_f(Finding::kPneumothorax)) {
    st.denied.push_back(Finding::kPneumothorax);
    normal.push_back(r.pick<std::string>({"No pneumothorax.", "There is no pneumothorax."}));
  }
  if (!has_f(Finding::kConsolidation) && !has_f(Finding::kGroundGlass) && r.chance(0.6)) {
    st.denied.push_back(Finding::kConsolidation);
    normal.push_back(r.pick<std::string>({"No focal consolidation.", "There is no focal consolidation.",
                                          "No focal airspace consolidation is seen."}));
  }
  if (!has_f(Finding::kEdema) && r.chance(0.4)) {
    st.denied.push_back(Finding::kEdema);
    normal.push_back(r.pick<std::string>({"No pulmonary edema.", "There is no evidence of pulmonary edema."}));
  }
  if (st.instances.empty()) {
    normal.push_back(r.pick<std::string>({"The lungs are clear.", "Lungs are well expanded and clear.",
                                          "The lungs are clear without focal opacity."}));
    impression.push_back(r.pick<std::string>({"No acute cardiopulmonary process.", "No acute intrathoracic abnormality.",
                                              "No acute cardiopulmonary abnormality."}));
  }
  // Findings first in most reports, normal statements interleaved in others.
  std::vector<std::string> all = finding_sents;
  for (auto& n : normal) {
    const size_t pos = r.chance(0.7) ? all.size() : static_cast<size_t>(r.integer(0, static_cast<int>(all.size())));
    all.insert(all.begin() + static_cast<long>(pos), n);
  }
  for (size_t i = 0; i < all.size(); ++i) st.findings += (i ? " " : "") + all[i];
  for (size_t i = 0; i < impression.size(); ++i) st.impression += (i ? " " : "") + impression[i];
  return st;
}

}  // namespace afloc::data::phantom
