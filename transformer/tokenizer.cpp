// Tokenizer: SentencePiece-style BPE (score- or rank-driven merges, byte fallback) and byte-level BPE
// (GPT-2 byte map, ranked merges, GPT-2 / Llama-3 / Qwen2 / SmolLM pre-split written out by hand).
#include "transformer/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <queue>
#include <utility>

#include "core/error.h"

namespace nammkit {

namespace {

const std::string kSpaceMarker = "\xE2\x96\x81";    // U+2581 "▁", SentencePiece's visible space
constexpr char32_t kInvalidCodepoint = 0xFFFFFFFF;  // a byte that does not start valid UTF-8

// ---------------------------------------------------------------------------------------------
// Unicode classes for the pre-split: \p{L} (letters: Lu Ll Lt Lm Lo) and \p{N} (Nd Nl No) exactly as
// Hugging Face tokenizers 0.23.3's regex engine (Oniguruma) classifies them, plus the few characters
// its Digits pre-tokenizer (Rust's char::is_numeric, newer Unicode tables) also isolates. Measured
// from the library (consecutive code points merged) by:
//   tools/train_testbed/.venv/bin/python tools/reference/smollm2_tokenizer_cases.py --unicode-tables
struct CodeRange {
  char32_t lo, hi;
};
constexpr CodeRange kLetterRanges[] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0xAA, 0xAA},       {0xB5, 0xB5},       {0xBA, 0xBA},
    {0xC0, 0xD6},       {0xD8, 0xF6},       {0xF8, 0x2C1},      {0x2C6, 0x2D1},     {0x2E0, 0x2E4},
    {0x2EC, 0x2EC},     {0x2EE, 0x2EE},     {0x370, 0x374},     {0x376, 0x377},     {0x37A, 0x37D},
    {0x37F, 0x37F},     {0x386, 0x386},     {0x388, 0x38A},     {0x38C, 0x38C},     {0x38E, 0x3A1},
    {0x3A3, 0x3F5},     {0x3F7, 0x481},     {0x48A, 0x52F},     {0x531, 0x556},     {0x559, 0x559},
    {0x560, 0x588},     {0x5D0, 0x5EA},     {0x5EF, 0x5F2},     {0x620, 0x64A},     {0x66E, 0x66F},
    {0x671, 0x6D3},     {0x6D5, 0x6D5},     {0x6E5, 0x6E6},     {0x6EE, 0x6EF},     {0x6FA, 0x6FC},
    {0x6FF, 0x6FF},     {0x710, 0x710},     {0x712, 0x72F},     {0x74D, 0x7A5},     {0x7B1, 0x7B1},
    {0x7CA, 0x7EA},     {0x7F4, 0x7F5},     {0x7FA, 0x7FA},     {0x800, 0x815},     {0x81A, 0x81A},
    {0x824, 0x824},     {0x828, 0x828},     {0x840, 0x858},     {0x860, 0x86A},     {0x870, 0x887},
    {0x889, 0x88E},     {0x8A0, 0x8C9},     {0x904, 0x939},     {0x93D, 0x93D},     {0x950, 0x950},
    {0x958, 0x961},     {0x971, 0x980},     {0x985, 0x98C},     {0x98F, 0x990},     {0x993, 0x9A8},
    {0x9AA, 0x9B0},     {0x9B2, 0x9B2},     {0x9B6, 0x9B9},     {0x9BD, 0x9BD},     {0x9CE, 0x9CE},
    {0x9DC, 0x9DD},     {0x9DF, 0x9E1},     {0x9F0, 0x9F1},     {0x9FC, 0x9FC},     {0xA05, 0xA0A},
    {0xA0F, 0xA10},     {0xA13, 0xA28},     {0xA2A, 0xA30},     {0xA32, 0xA33},     {0xA35, 0xA36},
    {0xA38, 0xA39},     {0xA59, 0xA5C},     {0xA5E, 0xA5E},     {0xA72, 0xA74},     {0xA85, 0xA8D},
    {0xA8F, 0xA91},     {0xA93, 0xAA8},     {0xAAA, 0xAB0},     {0xAB2, 0xAB3},     {0xAB5, 0xAB9},
    {0xABD, 0xABD},     {0xAD0, 0xAD0},     {0xAE0, 0xAE1},     {0xAF9, 0xAF9},     {0xB05, 0xB0C},
    {0xB0F, 0xB10},     {0xB13, 0xB28},     {0xB2A, 0xB30},     {0xB32, 0xB33},     {0xB35, 0xB39},
    {0xB3D, 0xB3D},     {0xB5C, 0xB5D},     {0xB5F, 0xB61},     {0xB71, 0xB71},     {0xB83, 0xB83},
    {0xB85, 0xB8A},     {0xB8E, 0xB90},     {0xB92, 0xB95},     {0xB99, 0xB9A},     {0xB9C, 0xB9C},
    {0xB9E, 0xB9F},     {0xBA3, 0xBA4},     {0xBA8, 0xBAA},     {0xBAE, 0xBB9},     {0xBD0, 0xBD0},
    {0xC05, 0xC0C},     {0xC0E, 0xC10},     {0xC12, 0xC28},     {0xC2A, 0xC39},     {0xC3D, 0xC3D},
    {0xC58, 0xC5A},     {0xC5D, 0xC5D},     {0xC60, 0xC61},     {0xC80, 0xC80},     {0xC85, 0xC8C},
    {0xC8E, 0xC90},     {0xC92, 0xCA8},     {0xCAA, 0xCB3},     {0xCB5, 0xCB9},     {0xCBD, 0xCBD},
    {0xCDD, 0xCDE},     {0xCE0, 0xCE1},     {0xCF1, 0xCF2},     {0xD04, 0xD0C},     {0xD0E, 0xD10},
    {0xD12, 0xD3A},     {0xD3D, 0xD3D},     {0xD4E, 0xD4E},     {0xD54, 0xD56},     {0xD5F, 0xD61},
    {0xD7A, 0xD7F},     {0xD85, 0xD96},     {0xD9A, 0xDB1},     {0xDB3, 0xDBB},     {0xDBD, 0xDBD},
    {0xDC0, 0xDC6},     {0xE01, 0xE30},     {0xE32, 0xE33},     {0xE40, 0xE46},     {0xE81, 0xE82},
    {0xE84, 0xE84},     {0xE86, 0xE8A},     {0xE8C, 0xEA3},     {0xEA5, 0xEA5},     {0xEA7, 0xEB0},
    {0xEB2, 0xEB3},     {0xEBD, 0xEBD},     {0xEC0, 0xEC4},     {0xEC6, 0xEC6},     {0xEDC, 0xEDF},
    {0xF00, 0xF00},     {0xF40, 0xF47},     {0xF49, 0xF6C},     {0xF88, 0xF8C},     {0x1000, 0x102A},
    {0x103F, 0x103F},   {0x1050, 0x1055},   {0x105A, 0x105D},   {0x1061, 0x1061},   {0x1065, 0x1066},
    {0x106E, 0x1070},   {0x1075, 0x1081},   {0x108E, 0x108E},   {0x10A0, 0x10C5},   {0x10C7, 0x10C7},
    {0x10CD, 0x10CD},   {0x10D0, 0x10FA},   {0x10FC, 0x1248},   {0x124A, 0x124D},   {0x1250, 0x1256},
    {0x1258, 0x1258},   {0x125A, 0x125D},   {0x1260, 0x1288},   {0x128A, 0x128D},   {0x1290, 0x12B0},
    {0x12B2, 0x12B5},   {0x12B8, 0x12BE},   {0x12C0, 0x12C0},   {0x12C2, 0x12C5},   {0x12C8, 0x12D6},
    {0x12D8, 0x1310},   {0x1312, 0x1315},   {0x1318, 0x135A},   {0x1380, 0x138F},   {0x13A0, 0x13F5},
    {0x13F8, 0x13FD},   {0x1401, 0x166C},   {0x166F, 0x167F},   {0x1681, 0x169A},   {0x16A0, 0x16EA},
    {0x16F1, 0x16F8},   {0x1700, 0x1711},   {0x171F, 0x1731},   {0x1740, 0x1751},   {0x1760, 0x176C},
    {0x176E, 0x1770},   {0x1780, 0x17B3},   {0x17D7, 0x17D7},   {0x17DC, 0x17DC},   {0x1820, 0x1878},
    {0x1880, 0x1884},   {0x1887, 0x18A8},   {0x18AA, 0x18AA},   {0x18B0, 0x18F5},   {0x1900, 0x191E},
    {0x1950, 0x196D},   {0x1970, 0x1974},   {0x1980, 0x19AB},   {0x19B0, 0x19C9},   {0x1A00, 0x1A16},
    {0x1A20, 0x1A54},   {0x1AA7, 0x1AA7},   {0x1B05, 0x1B33},   {0x1B45, 0x1B4C},   {0x1B83, 0x1BA0},
    {0x1BAE, 0x1BAF},   {0x1BBA, 0x1BE5},   {0x1C00, 0x1C23},   {0x1C4D, 0x1C4F},   {0x1C5A, 0x1C7D},
    {0x1C80, 0x1C8A},   {0x1C90, 0x1CBA},   {0x1CBD, 0x1CBF},   {0x1CE9, 0x1CEC},   {0x1CEE, 0x1CF3},
    {0x1CF5, 0x1CF6},   {0x1CFA, 0x1CFA},   {0x1D00, 0x1DBF},   {0x1E00, 0x1F15},   {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45},   {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},   {0x1FBE, 0x1FBE},
    {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},   {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},   {0x2071, 0x2071},   {0x207F, 0x207F},   {0x2090, 0x209C},
    {0x2102, 0x2102},   {0x2107, 0x2107},   {0x210A, 0x2113},   {0x2115, 0x2115},   {0x2119, 0x211D},
    {0x2124, 0x2124},   {0x2126, 0x2126},   {0x2128, 0x2128},   {0x212A, 0x212D},   {0x212F, 0x2139},
    {0x213C, 0x213F},   {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2CE4},
    {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF3},   {0x2D00, 0x2D25},   {0x2D27, 0x2D27},   {0x2D2D, 0x2D2D},
    {0x2D30, 0x2D67},   {0x2D6F, 0x2D6F},   {0x2D80, 0x2D96},   {0x2DA0, 0x2DA6},   {0x2DA8, 0x2DAE},
    {0x2DB0, 0x2DB6},   {0x2DB8, 0x2DBE},   {0x2DC0, 0x2DC6},   {0x2DC8, 0x2DCE},   {0x2DD0, 0x2DD6},
    {0x2DD8, 0x2DDE},   {0x2E2F, 0x2E2F},   {0x3005, 0x3006},   {0x3031, 0x3035},   {0x303B, 0x303C},
    {0x3041, 0x3096},   {0x309D, 0x309F},   {0x30A1, 0x30FA},   {0x30FC, 0x30FF},   {0x3105, 0x312F},
    {0x3131, 0x318E},   {0x31A0, 0x31BF},   {0x31F0, 0x31FF},   {0x3400, 0x4DBF},   {0x4E00, 0xA48C},
    {0xA4D0, 0xA4FD},   {0xA500, 0xA60C},   {0xA610, 0xA61F},   {0xA62A, 0xA62B},   {0xA640, 0xA66E},
    {0xA67F, 0xA69D},   {0xA6A0, 0xA6E5},   {0xA717, 0xA71F},   {0xA722, 0xA788},   {0xA78B, 0xA7CD},
    {0xA7D0, 0xA7D1},   {0xA7D3, 0xA7D3},   {0xA7D5, 0xA7DC},   {0xA7F2, 0xA801},   {0xA803, 0xA805},
    {0xA807, 0xA80A},   {0xA80C, 0xA822},   {0xA840, 0xA873},   {0xA882, 0xA8B3},   {0xA8F2, 0xA8F7},
    {0xA8FB, 0xA8FB},   {0xA8FD, 0xA8FE},   {0xA90A, 0xA925},   {0xA930, 0xA946},   {0xA960, 0xA97C},
    {0xA984, 0xA9B2},   {0xA9CF, 0xA9CF},   {0xA9E0, 0xA9E4},   {0xA9E6, 0xA9EF},   {0xA9FA, 0xA9FE},
    {0xAA00, 0xAA28},   {0xAA40, 0xAA42},   {0xAA44, 0xAA4B},   {0xAA60, 0xAA76},   {0xAA7A, 0xAA7A},
    {0xAA7E, 0xAAAF},   {0xAAB1, 0xAAB1},   {0xAAB5, 0xAAB6},   {0xAAB9, 0xAABD},   {0xAAC0, 0xAAC0},
    {0xAAC2, 0xAAC2},   {0xAADB, 0xAADD},   {0xAAE0, 0xAAEA},   {0xAAF2, 0xAAF4},   {0xAB01, 0xAB06},
    {0xAB09, 0xAB0E},   {0xAB11, 0xAB16},   {0xAB20, 0xAB26},   {0xAB28, 0xAB2E},   {0xAB30, 0xAB5A},
    {0xAB5C, 0xAB69},   {0xAB70, 0xABE2},   {0xAC00, 0xD7A3},   {0xD7B0, 0xD7C6},   {0xD7CB, 0xD7FB},
    {0xF900, 0xFA6D},   {0xFA70, 0xFAD9},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},   {0xFB1D, 0xFB1D},
    {0xFB1F, 0xFB28},   {0xFB2A, 0xFB36},   {0xFB38, 0xFB3C},   {0xFB3E, 0xFB3E},   {0xFB40, 0xFB41},
    {0xFB43, 0xFB44},   {0xFB46, 0xFBB1},   {0xFBD3, 0xFD3D},   {0xFD50, 0xFD8F},   {0xFD92, 0xFDC7},
    {0xFDF0, 0xFDFB},   {0xFE70, 0xFE74},   {0xFE76, 0xFEFC},   {0xFF21, 0xFF3A},   {0xFF41, 0xFF5A},
    {0xFF66, 0xFFBE},   {0xFFC2, 0xFFC7},   {0xFFCA, 0xFFCF},   {0xFFD2, 0xFFD7},   {0xFFDA, 0xFFDC},
    {0x10000, 0x1000B}, {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D}, {0x1003F, 0x1004D},
    {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0}, {0x10300, 0x1031F},
    {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375}, {0x10380, 0x1039D}, {0x103A0, 0x103C3},
    {0x103C8, 0x103CF}, {0x10400, 0x1049D}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527},
    {0x10530, 0x10563}, {0x10570, 0x1057A}, {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595},
    {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9}, {0x105BB, 0x105BC}, {0x105C0, 0x105F3},
    {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808}, {0x1080A, 0x10835}, {0x10837, 0x10838},
    {0x1083C, 0x1083C}, {0x1083F, 0x10855}, {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2},
    {0x108F4, 0x108F5}, {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF},
    {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17}, {0x10A19, 0x10A35}, {0x10A60, 0x10A7C},
    {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4}, {0x10B00, 0x10B35}, {0x10B40, 0x10B55},
    {0x10B60, 0x10B72}, {0x10B80, 0x10B91}, {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x10D00, 0x10D23}, {0x10D4A, 0x10D65}, {0x10D6F, 0x10D85}, {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1},
    {0x10EC2, 0x10EC4}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27}, {0x10F30, 0x10F45}, {0x10F70, 0x10F81},
    {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6}, {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075},
    {0x11083, 0x110AF}, {0x110D0, 0x110E8}, {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147},
    {0x11150, 0x11172}, {0x11176, 0x11176}, {0x11183, 0x111B2}, {0x111C1, 0x111C4}, {0x111DA, 0x111DA},
    {0x111DC, 0x111DC}, {0x11200, 0x11211}, {0x11213, 0x1122B}, {0x1123F, 0x11240}, {0x11280, 0x11286},
    {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D}, {0x1129F, 0x112A8}, {0x112B0, 0x112DE},
    {0x11305, 0x1130C}, {0x1130F, 0x11310}, {0x11313, 0x11328}, {0x1132A, 0x11330}, {0x11332, 0x11333},
    {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350}, {0x1135D, 0x11361}, {0x11380, 0x11389},
    {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1},
    {0x113D3, 0x113D3}, {0x11400, 0x11434}, {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF},
    {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB}, {0x11600, 0x1162F},
    {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8}, {0x11700, 0x1171A}, {0x11740, 0x11746},
    {0x11800, 0x1182B}, {0x118A0, 0x118DF}, {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913},
    {0x11915, 0x11916}, {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7},
    {0x119AA, 0x119D0}, {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00}, {0x11A0B, 0x11A32},
    {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89}, {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8},
    {0x11BC0, 0x11BE0}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40}, {0x11C72, 0x11C8F},
    {0x11D00, 0x11D06}, {0x11D08, 0x11D09}, {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65},
    {0x11D67, 0x11D68}, {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11F02, 0x11F02},
    {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399}, {0x12480, 0x12543},
    {0x12F90, 0x12FF0}, {0x13000, 0x1342F}, {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x14400, 0x14646},
    {0x16100, 0x1611D}, {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE}, {0x16AD0, 0x16AED},
    {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77}, {0x16B7D, 0x16B8F}, {0x16D40, 0x16D6C},
    {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A}, {0x16F50, 0x16F50}, {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1},
    {0x16FE3, 0x16FE3}, {0x17000, 0x187F7}, {0x18800, 0x18CD5}, {0x18CFF, 0x18D08}, {0x1AFF0, 0x1AFF3},
    {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122}, {0x1B132, 0x1B132}, {0x1B150, 0x1B152},
    {0x1B155, 0x1B155}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A}, {0x1BC70, 0x1BC7C},
    {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454}, {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F},
    {0x1D4A2, 0x1D4A2}, {0x1D4A5, 0x1D4A6}, {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB},
    {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514}, {0x1D516, 0x1D51C},
    {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544}, {0x1D546, 0x1D546}, {0x1D54A, 0x1D550},
    {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714},
    {0x1D716, 0x1D734}, {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8},
    {0x1D7AA, 0x1D7C2}, {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D},
    {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD}, {0x1E2C0, 0x1E2EB},
    {0x1E4D0, 0x1E4EB}, {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB},
    {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B},
    {0x1EE00, 0x1EE03}, {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27},
    {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42},
    {0x1EE47, 0x1EE47}, {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52},
    {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D},
    {0x1EE5F, 0x1EE5F}, {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72},
    {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B},
    {0x1EEA1, 0x1EEA3}, {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B739},
    {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2EBF0, 0x2EE5D}, {0x2F800, 0x2FA1D},
    {0x30000, 0x3134A}, {0x31350, 0x323AF},
};
constexpr CodeRange kNumberRanges[] = {
    {0x30, 0x39},       {0xB2, 0xB3},       {0xB9, 0xB9},       {0xBC, 0xBE},       {0x660, 0x669},
    {0x6F0, 0x6F9},     {0x7C0, 0x7C9},     {0x966, 0x96F},     {0x9E6, 0x9EF},     {0x9F4, 0x9F9},
    {0xA66, 0xA6F},     {0xAE6, 0xAEF},     {0xB66, 0xB6F},     {0xB72, 0xB77},     {0xBE6, 0xBF2},
    {0xC66, 0xC6F},     {0xC78, 0xC7E},     {0xCE6, 0xCEF},     {0xD58, 0xD5E},     {0xD66, 0xD78},
    {0xDE6, 0xDEF},     {0xE50, 0xE59},     {0xED0, 0xED9},     {0xF20, 0xF33},     {0x1040, 0x1049},
    {0x1090, 0x1099},   {0x1369, 0x137C},   {0x16EE, 0x16F0},   {0x17E0, 0x17E9},   {0x17F0, 0x17F9},
    {0x1810, 0x1819},   {0x1946, 0x194F},   {0x19D0, 0x19DA},   {0x1A80, 0x1A89},   {0x1A90, 0x1A99},
    {0x1B50, 0x1B59},   {0x1BB0, 0x1BB9},   {0x1C40, 0x1C49},   {0x1C50, 0x1C59},   {0x2070, 0x2070},
    {0x2074, 0x2079},   {0x2080, 0x2089},   {0x2150, 0x2182},   {0x2185, 0x2189},   {0x2460, 0x249B},
    {0x24EA, 0x24FF},   {0x2776, 0x2793},   {0x2CFD, 0x2CFD},   {0x3007, 0x3007},   {0x3021, 0x3029},
    {0x3038, 0x303A},   {0x3192, 0x3195},   {0x3220, 0x3229},   {0x3248, 0x324F},   {0x3251, 0x325F},
    {0x3280, 0x3289},   {0x32B1, 0x32BF},   {0xA620, 0xA629},   {0xA6E6, 0xA6EF},   {0xA830, 0xA835},
    {0xA8D0, 0xA8D9},   {0xA900, 0xA909},   {0xA9D0, 0xA9D9},   {0xA9F0, 0xA9F9},   {0xAA50, 0xAA59},
    {0xABF0, 0xABF9},   {0xFF10, 0xFF19},   {0x10107, 0x10133}, {0x10140, 0x10178}, {0x1018A, 0x1018B},
    {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10341, 0x10341}, {0x1034A, 0x1034A}, {0x103D1, 0x103D5},
    {0x104A0, 0x104A9}, {0x10858, 0x1085F}, {0x10879, 0x1087F}, {0x108A7, 0x108AF}, {0x108FB, 0x108FF},
    {0x10916, 0x1091B}, {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF}, {0x10A40, 0x10A48},
    {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F}, {0x10B78, 0x10B7F},
    {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39}, {0x10D40, 0x10D49}, {0x10E60, 0x10E7E},
    {0x10F1D, 0x10F26}, {0x10F51, 0x10F54}, {0x10FC5, 0x10FCB}, {0x11052, 0x1106F}, {0x110F0, 0x110F9},
    {0x11136, 0x1113F}, {0x111D0, 0x111D9}, {0x111E1, 0x111F4}, {0x112F0, 0x112F9}, {0x11450, 0x11459},
    {0x114D0, 0x114D9}, {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x116D0, 0x116E3}, {0x11730, 0x1173B},
    {0x118E0, 0x118F2}, {0x11950, 0x11959}, {0x11BF0, 0x11BF9}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59},
    {0x11DA0, 0x11DA9}, {0x11F50, 0x11F59}, {0x11FC0, 0x11FD4}, {0x12400, 0x1246E}, {0x16130, 0x16139},
    {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x16B5B, 0x16B61}, {0x16D70, 0x16D79},
    {0x16E80, 0x16E96}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3}, {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378},
    {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9}, {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
    {0x1E8C7, 0x1E8CF}, {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF}, {0x1ECB1, 0x1ECB4},
    {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};
constexpr CodeRange kNumericExtraRanges[] = {
    {0x11DE0, 0x11DE9},
    {0x16FF4, 0x16FF6},
};

bool in_ranges(const CodeRange* begin, const CodeRange* end, char32_t cp) {
  const CodeRange* it = std::upper_bound(begin, end, cp, [](char32_t c, const CodeRange& r) { return c < r.lo; });
  return it != begin && cp <= (it - 1)->hi;
}

bool is_letter(char32_t cp) { return in_ranges(std::begin(kLetterRanges), std::end(kLetterRanges), cp); }
bool is_number(char32_t cp) { return in_ranges(std::begin(kNumberRanges), std::end(kNumberRanges), cp); }
// HF's Digits(individual_digits=true): \p{N} and a few characters its newer Unicode calls numeric.
bool is_numeric(char32_t cp) {
  return is_number(cp) || in_ranges(std::begin(kNumericExtraRanges), std::end(kNumericExtraRanges), cp);
}
bool is_newline(char32_t cp) { return cp == '\r' || cp == '\n'; }

// \s as the tokenizers' regex engines define it: Unicode White_Space.
bool is_space(char32_t cp) {
  switch (cp) {
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case ' ':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
  }
}

// Byte length of the UTF-8 sequence starting at text[i]; 1 for a byte that cannot start a valid one
// (so malformed input still splits into units that round-trip byte for byte).
size_t utf8_sequence_length(std::string_view text, size_t i, char32_t* codepoint) {
  const auto b0 = static_cast<uint8_t>(text[i]);
  size_t len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > text.size()) {
    *codepoint = kInvalidCodepoint;
    return 1;
  }
  char32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<uint8_t>(text[i + k]);
    if ((b & 0xC0) != 0x80) {
      *codepoint = kInvalidCodepoint;
      return 1;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  *codepoint = cp;
  return len;
}

std::string utf8_encode(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Splits text into UTF-8 characters (malformed bytes become one-byte units).
std::vector<std::string_view> utf8_units(std::string_view text) {
  std::vector<std::string_view> units;
  for (size_t i = 0; i < text.size();) {
    char32_t cp;
    const size_t len = utf8_sequence_length(text, i, &cp);
    units.push_back(text.substr(i, len));
    i += len;
  }
  return units;
}

// "<0x41>" -> 0x41; -1 for anything else.
int parse_byte_piece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = piece[k];
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                             : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's reversible byte <-> printable-character map: printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100.. in byte order, so every piece is visible text without spaces.
struct ByteUnicodeMap {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int, 324> codepoint_to_byte;  // -1 where no byte maps

  ByteUnicodeMap() {
    codepoint_to_byte.fill(-1);
    int next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int cp = printable ? b : next_extra++;
      byte_to_utf8[b] = utf8_encode(static_cast<char32_t>(cp));
      codepoint_to_byte[cp] = b;
    }
  }
};

const ByteUnicodeMap& byte_unicode_map() {
  static const ByteUnicodeMap map;
  return map;
}

// ---------------------------------------------------------------------------------------------
// The pre-tokenizer regexes, matched by hand. Alternatives are tried in the regex's order at each
// position; each returns the end of its match or `i` when it does not match.
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//           \s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:  as llama3 with \p{N} (single digits) instead of \p{N}{1,3}
//   smollm: every \p{N} isolated first (HF Digits(individual_digits=true), llama.cpp's SMOLLM), then
//           gpt2 on each stretch between digits (see pre_split)
enum class SplitStyle { Gpt2, Llama3, Qwen2, SmolLM };

SplitStyle split_style(const std::string& pre_tokenizer) {
  if (pre_tokenizer == "llama3") return SplitStyle::Llama3;
  if (pre_tokenizer == "qwen2") return SplitStyle::Qwen2;
  if (pre_tokenizer == "smollm") return SplitStyle::SmolLM;
  if (pre_tokenizer.empty() || pre_tokenizer == "gpt2") return SplitStyle::Gpt2;
  fail("tokenizer", "pre_tokenizer: unsupported '" + pre_tokenizer + "' (supported: gpt2, llama3, qwen2, smollm)");
}

class PreSplitter {
 public:
  PreSplitter(std::string_view text, SplitStyle style) : style_(style) {
    for (size_t i = 0; i < text.size();) {
      char32_t cp;
      const size_t len = utf8_sequence_length(text, i, &cp);
      cps_.push_back(cp);
      offsets_.push_back(i);
      i += len;
    }
    offsets_.push_back(text.size());
  }

  // Byte ranges [begin, end) of the chunks, in order; together they cover the text.
  std::vector<std::pair<size_t, size_t>> chunks() const {
    std::vector<std::pair<size_t, size_t>> out;
    for (size_t i = 0; i < cps_.size();) {
      const size_t j = match(i);
      out.emplace_back(offsets_[i], offsets_[j]);
      i = j;
    }
    return out;
  }

 private:
  size_t size() const { return cps_.size(); }
  bool letter(size_t i) const { return i < size() && is_letter(cps_[i]); }
  bool number(size_t i) const { return i < size() && is_number(cps_[i]); }
  bool space(size_t i) const { return i < size() && is_space(cps_[i]); }
  bool newline(size_t i) const { return i < size() && is_newline(cps_[i]); }
  bool literal_space(size_t i) const { return i < size() && cps_[i] == ' '; }
  // [^\s\p{L}\p{N}]
  bool punct(size_t i) const { return i < size() && !is_space(cps_[i]) && !is_letter(cps_[i]) && !is_number(cps_[i]); }

  size_t match(size_t i) const {
    for (size_t j : {contraction(i), letters(i), numbers(i), punctuation(i), spaces_to_newline(i), spaces(i)}) {
      if (j > i) return j;
    }
    return i + 1;  // unreachable in practice: every character belongs to one class above
  }

  // 's 't 're 've 'm 'll 'd  (case-insensitive for llama3 / qwen2)
  size_t contraction(size_t i) const {
    if (i >= size() || cps_[i] != '\'') return i;
    auto lower = [&](size_t k) -> char32_t {
      if (k >= size()) return 0;
      const char32_t c = cps_[k];
      return style_ != SplitStyle::Gpt2 && c >= 'A' && c <= 'Z' ? c + 32 : c;
    };
    const char32_t a = lower(i + 1), b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    return i;
  }

  // gpt2: " ?\p{L}+"; llama3/qwen2: "[^\r\n\p{L}\p{N}]?\p{L}+"
  size_t letters(size_t i) const {
    size_t j = i;
    if (style_ == SplitStyle::Gpt2) {
      if (literal_space(j) && letter(j + 1)) ++j;
    } else if (i < size() && !letter(i) && !number(i) && !newline(i) && letter(i + 1)) {
      ++j;
    }
    if (!letter(j)) return i;
    while (letter(j)) ++j;
    return j;
  }

  // gpt2: " ?\p{N}+"; llama3: "\p{N}{1,3}"; qwen2: "\p{N}"
  size_t numbers(size_t i) const {
    size_t j = i;
    if (style_ == SplitStyle::Gpt2) {
      if (literal_space(j) && number(j + 1)) ++j;
      if (!number(j)) return i;
      while (number(j)) ++j;
      return j;
    }
    const size_t max_digits = style_ == SplitStyle::Llama3 ? 3 : 1;
    while (j - i < max_digits && number(j)) ++j;
    return j;
  }

  // " ?[^\s\p{L}\p{N}]+", followed by "[\r\n]*" for llama3/qwen2
  size_t punctuation(size_t i) const {
    size_t j = i;
    if (literal_space(j) && punct(j + 1)) ++j;
    if (!punct(j)) return i;
    while (punct(j)) ++j;
    if (style_ != SplitStyle::Gpt2) {
      while (newline(j)) ++j;
    }
    return j;
  }

  // llama3/qwen2 "\s*[\r\n]+": backtracking makes it end right after the run's last CR/LF.
  size_t spaces_to_newline(size_t i) const {
    if (style_ == SplitStyle::Gpt2 || !space(i)) return i;
    size_t end = i;
    for (size_t j = i; space(j); ++j) {
      if (newline(j)) end = j + 1;
    }
    return end;
  }

  // "\s+(?!\S)|\s+": a whitespace run followed by text leaves its last character to that text
  // (so " word" keeps its space), unless the run is a single character.
  size_t spaces(size_t i) const {
    if (!space(i)) return i;
    size_t j = i;
    while (space(j)) ++j;
    if (j < size() && j - i > 1) return j - 1;
    return j;
  }

  SplitStyle style_;
  std::vector<char32_t> cps_;
  std::vector<size_t> offsets_;  // byte offset of each code point, plus the end
};

// Byte ranges [begin, end) of the pre-split chunks of `text`, in order, covering it.
std::vector<std::pair<size_t, size_t>> pre_split(std::string_view text, SplitStyle style) {
  if (style != SplitStyle::SmolLM) return PreSplitter(text, style).chunks();
  // HF runs the Digits pre-tokenizer first: each \p{N} character becomes a piece of its own, and the
  // ByteLevel regex then sees each stretch between digits as a separate string (its end is an end of
  // text for "\s+(?!\S)", so "a  1" gives "a" "  " "1", not gpt2's "a" " " " 1").
  std::vector<std::pair<size_t, size_t>> out;
  size_t stretch = 0;
  auto flush = [&](size_t end) {
    if (end == stretch) return;
    for (auto [b, e] : PreSplitter(text.substr(stretch, end - stretch), SplitStyle::Gpt2).chunks()) {
      out.emplace_back(stretch + b, stretch + e);
    }
  };
  for (size_t i = 0; i < text.size();) {
    char32_t cp;
    const size_t len = utf8_sequence_length(text, i, &cp);
    if (is_numeric(cp)) {
      flush(i);
      out.emplace_back(i, i + len);
      stretch = i + len;
    }
    i += len;
  }
  flush(text.size());
  return out;
}

std::string merge_key(std::string_view left, std::string_view right) {
  std::string key;
  key.reserve(left.size() + right.size() + 1);
  key.append(left).append(" ").append(right);
  return key;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::vector<std::string_view> byte_level_pre_split(std::string_view text, const std::string& pre_tokenizer) {
  std::vector<std::string_view> out;
  for (auto [begin, end] : pre_split(text, split_style(pre_tokenizer))) {
    out.push_back(text.substr(begin, end - begin));
  }
  return out;
}

Tokenizer::Tokenizer(TokenizerData data) : data_(std::move(data)) {
  const int n = vocab_size();
  if (!data_.scores.empty() && static_cast<int>(data_.scores.size()) != n) {
    fail("tokenizer",
         "scores: " + std::to_string(data_.scores.size()) + " entries for " + std::to_string(n) + " tokens");
  }
  control_.assign(n, false);
  for (int32_t id : data_.special_ids) {
    if (id >= 0 && id < n) control_[id] = true;
  }
  for (int32_t id : {data_.bos_id, data_.eos_id}) {
    if (id >= 0 && id < n) control_[id] = true;
  }
  if (data_.kind == TokenizerKind::SentencePiece) {
    byte_to_id_.assign(256, -1);
    for (int32_t id = 0; id < n; ++id) {
      if (const int b = parse_byte_piece(data_.pieces[id]); b >= 0 && byte_to_id_[b] < 0) byte_to_id_[b] = id;
    }
  }
  // Only ordinary pieces can be matched from text: not control tokens, not <unk>, not <0xXX>.
  for (int32_t id = 0; id < n; ++id) {
    const std::string& piece = data_.pieces[id];
    if (piece.empty() || control_[id] || id == data_.unk_id) continue;
    if (data_.kind == TokenizerKind::SentencePiece && parse_byte_piece(piece) >= 0) continue;
    piece_to_id_.emplace(piece, id);  // the first id wins on duplicates
  }
  for (size_t rank = 0; rank < data_.merges.size(); ++rank) {
    merge_rank_.emplace(data_.merges[rank], static_cast<int32_t>(rank));
  }
  if (data_.kind == TokenizerKind::ByteLevelBPE) {
    byte_in_vocab_.assign(256, false);
    for (int b = 0; b < 256; ++b) byte_in_vocab_[b] = piece_to_id_.contains(byte_unicode_map().byte_to_utf8[b]);
  }
  if (data_.kind == TokenizerKind::ByteLevelBPE) split_style(data_.pre_tokenizer);  // reject unknown styles now
}

int32_t Tokenizer::piece_id(std::string_view piece) const {
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (data_.pieces[id] == piece) return id;
  }
  return -1;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  if (empty()) fail("tokenizer", "encode: no tokenizer loaded");
  std::vector<int32_t> ids;
  if (add_bos && data_.add_bos) {
    if (data_.bos_id < 0) fail("tokenizer", "encode: BOS requested but the tokenizer has no bos id");
    ids.push_back(data_.bos_id);
  }
  if (text.empty()) return ids;
  if (data_.kind == TokenizerKind::SentencePiece) {
    encode_sentencepiece(text, ids);
  } else {
    encode_byte_level(text, ids);
  }
  return ids;
}

void Tokenizer::emit_piece(const std::string& symbol, std::vector<int32_t>& out) const {
  if (auto it = piece_to_id_.find(symbol); it != piece_to_id_.end()) {
    out.push_back(it->second);
    return;
  }
  if (data_.kind == TokenizerKind::SentencePiece) {
    // Byte fallback: each byte of the symbol as <0xXX>.
    for (unsigned char b : symbol) {
      if (byte_to_id_[b] >= 0) {
        out.push_back(byte_to_id_[b]);
      } else if (data_.unk_id >= 0) {
        out.push_back(data_.unk_id);
      } else {
        fail("tokenizer", "encode: byte " + std::to_string(b) + " has no piece, no byte fallback and no <unk>");
      }
    }
    return;
  }
  // Byte level: a merged symbol that is not a piece splits back into its characters (mapped bytes
  // that encode_byte_level kept because the vocabulary has them).
  for (std::string_view unit : utf8_units(symbol)) {
    if (auto it = piece_to_id_.find(std::string(unit)); it != piece_to_id_.end()) out.push_back(it->second);
  }
}

// SentencePiece BPE as llama.cpp's SPM tokenizer runs it: start from UTF-8 characters and repeatedly
// merge the adjacent pair with the best priority (highest score of the merged piece, or lowest rank
// when the tokenizer carries HF merges), leftmost first on ties.
void Tokenizer::encode_sentencepiece(std::string_view text, std::vector<int32_t>& out) const {
  std::string normalized;
  normalized.reserve(text.size() + 16);
  if (data_.add_space_prefix) normalized += kSpaceMarker;
  for (char c : text) {
    if (c == ' ') {
      normalized += kSpaceMarker;
    } else {
      normalized += c;
    }
  }

  struct Symbol {
    size_t start, len;
    int prev, next;
  };
  std::vector<Symbol> symbols;
  for (std::string_view unit : utf8_units(normalized)) {
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({static_cast<size_t>(unit.data() - normalized.data()), unit.size(), index - 1, index + 1});
  }
  symbols.back().next = -1;

  struct Bigram {
    int left, right;
    double priority;
    size_t len;
  };
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  const bool rank_driven = !merge_rank_.empty();

  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const std::string_view a(normalized.data() + symbols[left].start, symbols[left].len);
    const std::string_view b(normalized.data() + symbols[right].start, symbols[right].len);
    double priority;
    if (rank_driven) {
      auto it = merge_rank_.find(merge_key(a, b));
      if (it == merge_rank_.end()) return;
      priority = -static_cast<double>(it->second);
    } else {
      auto it = piece_to_id_.find(std::string(normalized.data() + symbols[left].start, a.size() + b.size()));
      if (it == piece_to_id_.end()) return;
      priority = data_.scores.empty() ? 0.0 : data_.scores[it->second];
    }
    queue.push({left, right, priority, a.size() + b.size()});
  };

  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!queue.empty()) {
    const Bigram top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Stale entry: one side was merged into something else since it was queued.
    if (left.len == 0 || right.len == 0 || left.len + right.len != top.len) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    try_add(left.prev, top.left);
    try_add(top.left, left.next);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) {
    emit_piece(normalized.substr(symbols[i].start, symbols[i].len), out);
  }
}

// Byte-level BPE: pre-split, map each chunk's bytes to GPT-2 characters, then apply the ranked
// merges (lowest rank first, every occurrence of that pair left to right) until none applies.
// A byte whose character is not in the vocabulary (SmolLM2 lacks 21, e.g. 0x04 and 0xF1) is dropped
// before merging, so its neighbours may merge: Hugging Face's BPE does this when the model has no
// unk_token, and llama.cpp's BPE drops such bytes too (a GGUF's unknown_token_id is not used).
void Tokenizer::encode_byte_level(std::string_view text, std::vector<int32_t>& out) const {
  const ByteUnicodeMap& map = byte_unicode_map();
  const SplitStyle style = split_style(data_.pre_tokenizer);
  // Llama-3 tokenizers set ignore_merges: a chunk that is a whole piece is taken as is.
  const bool whole_chunk_first = style == SplitStyle::Llama3;
  for (auto [begin, end] : pre_split(text, style)) {
    std::vector<std::string> symbols;
    std::string mapped;
    for (size_t i = begin; i < end; ++i) {
      const auto byte = static_cast<uint8_t>(text[i]);
      if (!byte_in_vocab_[byte]) continue;
      symbols.push_back(map.byte_to_utf8[byte]);
      mapped += symbols.back();
    }
    if (whole_chunk_first) {
      if (auto it = piece_to_id_.find(mapped); it != piece_to_id_.end()) {
        out.push_back(it->second);
        continue;
      }
    }
    while (symbols.size() > 1) {
      int32_t best_rank = std::numeric_limits<int32_t>::max();
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        if (auto it = merge_rank_.find(merge_key(symbols[i], symbols[i + 1])); it != merge_rank_.end()) {
          best_rank = std::min(best_rank, it->second);
        }
      }
      if (best_rank == std::numeric_limits<int32_t>::max()) break;
      const std::string& merge = data_.merges[best_rank];
      std::vector<std::string> merged;
      merged.reserve(symbols.size());
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && merge.size() == symbols[i].size() + 1 + symbols[i + 1].size() &&
            merge_key(symbols[i], symbols[i + 1]) == merge) {
          merged.push_back(symbols[i] + symbols[i + 1]);
          ++i;
        } else {
          merged.push_back(std::move(symbols[i]));
        }
      }
      symbols = std::move(merged);
    }
    for (const std::string& symbol : symbols) emit_piece(symbol, out);
  }
}

std::string Tokenizer::piece_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("tokenizer", "decode: id " + std::to_string(id) + " out of range");
  if (control_[id]) return {};
  const std::string& piece = data_.pieces[id];
  if (data_.kind == TokenizerKind::SentencePiece) {
    if (const int b = parse_byte_piece(piece); b >= 0) return std::string(1, static_cast<char>(b));
    std::string text;
    for (size_t pos = 0; pos < piece.size();) {
      if (piece.compare(pos, kSpaceMarker.size(), kSpaceMarker) == 0) {
        text += ' ';
        pos += kSpaceMarker.size();
      } else {
        text += piece[pos++];
      }
    }
    return text;
  }
  // Byte level: map each character back to its byte; characters outside the map (added tokens
  // stored as plain text) pass through unchanged.
  const ByteUnicodeMap& map = byte_unicode_map();
  std::string bytes;
  for (size_t i = 0; i < piece.size();) {
    char32_t cp;
    const size_t len = utf8_sequence_length(piece, i, &cp);
    if (cp < map.codepoint_to_byte.size() && map.codepoint_to_byte[cp] >= 0) {
      bytes += static_cast<char>(map.codepoint_to_byte[cp]);
    } else {
      bytes.append(piece, i, len);
    }
    i += len;
  }
  return bytes;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  bool first = true;
  for (int32_t id : ids) {
    std::string piece = piece_text(id);
    if (piece.empty()) continue;
    // SentencePiece added "▁" in front of the text: the first piece's leading space is not text.
    if (first && data_.kind == TokenizerKind::SentencePiece && data_.add_space_prefix && piece[0] == ' ') {
      piece.erase(0, 1);
    }
    first = false;
    text += piece;
  }
  return text;
}

std::string Tokenizer::decode_token(int32_t prev, int32_t id) const {
  std::string piece = piece_text(id);
  const bool starts_text = prev < 0 || prev == data_.bos_id;
  if (starts_text && data_.kind == TokenizerKind::SentencePiece && data_.add_space_prefix && !piece.empty() &&
      piece[0] == ' ') {
    piece.erase(0, 1);
  }
  return piece;
}

}  // namespace nammkit
