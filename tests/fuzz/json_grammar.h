#pragma once

// Whether text is one JSON value by RFC 8259's grammar, in valid UTF-8 unless `check_utf8` is off.
// Unlike a parser that builds numbers (nlohmann's rejects 1e400 as an overflow), it accepts any
// number the grammar allows: cdcd keeps numbers digit for digit, and such a row is valid JSON.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cdcd::fuzz {

class JsonGrammar {
 public:
  static bool accepts(std::string_view text, bool check_utf8 = true) {
    JsonGrammar grammar(text, check_utf8);
    grammar.space();
    if (!grammar.value(0)) return false;
    grammar.space();
    return grammar.pos_ == text.size();
  }

 private:
  JsonGrammar(std::string_view text, bool check_utf8) : text_(text), check_utf8_(check_utf8) {}

  static constexpr int kMaxDepth = 10000;

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  bool take(char c) {
    if (peek() != c || at_end()) return false;
    ++pos_;
    return true;
  }
  void space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
      ++pos_;
    }
  }
  bool literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  bool digits() {
    std::size_t start = pos_;
    while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    return pos_ > start;
  }
  bool number() {
    take('-');
    if (!take('0') && !digits()) return false;
    if (take('.') && !digits()) return false;
    if (take('e') || take('E')) {
      if (!take('+')) take('-');
      if (!digits()) return false;
    }
    return true;
  }
  // One UTF-8 sequence (shortest form, no surrogates, at most U+10FFFF).
  bool utf8() {
    auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(text_[pos_ + i]); };
    std::uint8_t lead = byte(0);
    std::size_t length = lead < 0x80                    ? 1
                         : lead >= 0xC2 && lead <= 0xDF ? 2
                         : lead >= 0xE0 && lead <= 0xEF ? 3
                         : lead >= 0xF0 && lead <= 0xF4 ? 4
                                                        : 0;
    if (length == 0 || text_.size() - pos_ < length) return false;
    for (std::size_t i = 1; i < length; ++i) {
      if ((byte(i) & 0xC0) != 0x80) return false;
    }
    if (lead == 0xE0 && byte(1) < 0xA0) return false;
    if (lead == 0xED && byte(1) > 0x9F) return false;
    if (lead == 0xF0 && byte(1) < 0x90) return false;
    if (lead == 0xF4 && byte(1) > 0x8F) return false;
    pos_ += length;
    return true;
  }
  bool string() {
    if (!take('"')) return false;
    while (!at_end()) {
      char c = peek();
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (static_cast<std::uint8_t>(c) < 0x20) return false;
      if (c != '\\') {
        if (!check_utf8_) {
          ++pos_;
        } else if (!utf8()) {
          return false;
        }
        continue;
      }
      ++pos_;
      char escape = peek();
      if (at_end()) return false;
      ++pos_;
      if (escape == 'u') {
        for (int i = 0; i < 4; ++i) {
          char h = peek();
          bool hex = (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
          if (at_end() || !hex) return false;
          ++pos_;
        }
      } else if (std::string_view("\"\\/bfnrt").find(escape) == std::string_view::npos) {
        return false;
      }
    }
    return false;
  }
  template <typename Element>
  bool members(char close, Element element) {
    space();
    if (take(close)) return true;
    while (true) {
      space();
      if (!element()) return false;
      space();
      if (take(close)) return true;
      if (!take(',')) return false;
    }
  }
  bool value(int depth) {
    if (depth > kMaxDepth) return false;
    switch (peek()) {
      case '{':
        ++pos_;
        return members('}', [&] {
          if (!string()) return false;
          space();
          if (!take(':')) return false;
          space();
          return value(depth + 1);
        });
      case '[':
        ++pos_;
        return members(']', [&] { return value(depth + 1); });
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }

  std::string_view text_;
  bool check_utf8_;
  std::size_t pos_ = 0;
};

}  // namespace cdcd::fuzz
