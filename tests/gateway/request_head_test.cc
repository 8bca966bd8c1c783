#include "gateway/request_head.h"

#include <gtest/gtest.h>

#include <limits>

namespace intgrads {
namespace {

TEST(RequestHead, WaitsForTheBlankLineThatEndsIt) {
  EXPECT_FALSE(ParseRequestHead("POST /model/ HTTP/1.1\r\nContent-Length: 5\r\n").has_value());
  EXPECT_FALSE(ParseRequestHead("POST /model/ HTTP/1.1\r\nContent-Length: 5\r\n\r").has_value());
  EXPECT_TRUE(ParseRequestHead("POST /model/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n").has_value());
}

TEST(RequestHead, FindsTheBlankLineWhereverThePiecesSplitIt) {
  const std::string bytes = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    // What came before the cut was searched and held no blank line.
    if (ParseRequestHead(bytes.substr(0, cut)).has_value()) continue;
    EXPECT_TRUE(ParseRequestHead(bytes, cut).has_value()) << cut;
  }
}

TEST(RequestHead, ReadsTheRequestLineAndFields) {
  const auto head = ParseRequestHead(
      "POST /v1/attributions?n_steps=4 HTTP/1.1\r\nHost: x\r\nAUTHORIZATION:  Bearer t \r\n"
      "content-length: 12\r\n\r\n{\"img_data\"");
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->method, "POST");
  EXPECT_EQ(head->target, "/v1/attributions?n_steps=4");
  EXPECT_EQ(head->Field("authorization"), "Bearer t");
  EXPECT_FALSE(head->Field("accept").has_value());
  EXPECT_EQ(head->ContentLength(), 12U);
  EXPECT_EQ(head->version, "HTTP/1.1");
  EXPECT_EQ(head->size,
            std::string("POST /v1/attributions?n_steps=4 HTTP/1.1\r\nHost: x\r\nAUTHORIZATION:  Bearer t \r\n"
                        "content-length: 12\r\n\r\n")
                .size());
}

TEST(RequestHead, ContentLengthOfNoneBadOverflowingAndSeveral) {
  auto length = [](const std::string& fields) {
    return ParseRequestHead("POST / HTTP/1.1\r\n" + fields + "\r\n")->ContentLength();
  };
  EXPECT_FALSE(length("Host: x\r\n").has_value());
  EXPECT_FALSE(length("Content-Length: abc\r\n").has_value());
  EXPECT_FALSE(length("Content-Length: -1\r\n").has_value());
  EXPECT_FALSE(length("Content-Length:\r\n").has_value());
  EXPECT_EQ(length("Content-Length: 18446744073709551615\r\n"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(length("Content-Length: 18446744073709551616\r\n"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(length("Content-Length: 99999999999999999999999999\r\n"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(length("Content-Length: 10\r\nContent-Length: 99999\r\nContent-Length: 7\r\n"), 99999U);
}

TEST(RequestHead, FramingErrorsAreNamed) {
  auto framing = [](const std::string& fields) {
    return ParseRequestHead("POST / HTTP/1.1\r\n" + fields + "\r\n")->FramingError();
  };
  EXPECT_EQ(framing("Host: x\r\n"), "");
  EXPECT_EQ(framing("Content-Length: 12\r\n"), "");
  EXPECT_EQ(framing("Content-Length: 12\r\ncontent-length:12\r\n"), "");  // the same twice
  EXPECT_EQ(framing("Transfer-Encoding: chunked\r\n"), "");
  EXPECT_EQ(framing("Content-Length: 99999999999999999999999\r\n"), "");  // a number, too large: a 413
  EXPECT_EQ(framing("Content-Length: -1\r\n"), "Content-Length: '-1' is not a number of bytes");
  EXPECT_EQ(framing("Content-Length:\r\n"), "Content-Length: '' is not a number of bytes");
  EXPECT_EQ(framing("Content-Length: 2, 2\r\n"), "Content-Length: '2, 2' is not a number of bytes");
  EXPECT_EQ(framing("Content-Length: " + std::string(100, 'x') + "\r\n"),
            "Content-Length: '" + std::string(40, 'x') + "' is not a number of bytes");
  EXPECT_EQ(framing("Content-Length: 2\r\nContent-Length: 3\r\n"), "Content-Length: several, and they differ");
  EXPECT_EQ(framing("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"),
            "Content-Length and Transfer-Encoding: one or the other");
  EXPECT_EQ(framing("Transfer-Encoding: Chunked\r\n"), "");
  EXPECT_EQ(framing("Transfer-Encoding: gzip, chunked\r\n"),
            "Transfer-Encoding: 'gzip, chunked': this server reads chunked bodies only");
}

TEST(RequestHead, CompressedBodiesAreNamed) {
  auto coding = [](const std::string& fields) {
    return ParseRequestHead("POST / HTTP/1.1\r\n" + fields + "\r\n")->ContentCodingError();
  };
  EXPECT_EQ(coding("Host: x\r\n"), "");
  EXPECT_EQ(coding("Content-Encoding: identity\r\n"), "");
  EXPECT_EQ(coding("Content-Encoding: Identity, identity\r\n"), "");
  EXPECT_EQ(coding("Content-Encoding:\r\n"), "");
  const std::string refused = "': this server reads request bodies as sent; send them uncompressed";
  EXPECT_EQ(coding("Content-Encoding: gzip\r\n"), "Content-Encoding: 'gzip" + refused);
  EXPECT_EQ(coding("content-encoding: identity, BR\r\n"), "Content-Encoding: 'br" + refused);
  EXPECT_EQ(coding("Content-Encoding: identity\r\nContent-Encoding: deflate\r\n"),
            "Content-Encoding: 'deflate" + refused);
}

TEST(RequestHead, KeepsAliveWhenAskedAndNotToldToClose) {
  auto keeps = [](const std::string& fields) {
    return ParseRequestHead("GET / HTTP/1.1\r\n" + fields + "\r\n")->KeepsAlive();
  };
  EXPECT_TRUE(keeps("Connection: keep-alive\r\n"));
  EXPECT_TRUE(keeps("Connection: Keep-Alive\r\n"));
  EXPECT_TRUE(keeps("Connection: Upgrade, keep-alive\r\n"));  // Pistache read the first token only
  EXPECT_TRUE(keeps("Connection: keep-alive , TE\r\n"));
  EXPECT_TRUE(keeps("Connection: Upgrade\r\nConnection: keep-alive\r\n"));
  EXPECT_FALSE(keeps("Host: x\r\n"));  // as Pistache answers: no Connection field, no keep-alive
  EXPECT_FALSE(keeps("Connection: close\r\n"));
  EXPECT_FALSE(keeps("Connection: TE, close\r\n"));
  EXPECT_FALSE(keeps("Connection: keep-alive, close\r\n"));
  EXPECT_FALSE(keeps("Connection: keep-alive\r\nConnection: CLOSE\r\n"));
  EXPECT_FALSE(keeps("Connection: Upgrade\r\n"));
  EXPECT_FALSE(keeps("Connection: keep-alive-ish\r\n"));
  EXPECT_FALSE(keeps("Connection:\r\n"));
  EXPECT_FALSE(keeps("Connection: ,,\r\n"));
}

// A chunked body's end, found wherever the pieces split it, with the bytes
// after it (the next request) left out.
TEST(ChunkedBody, EndsAfterTheLastChunkTrailersAndBlankLine) {
  const std::string next = "GET /healthz HTTP/1.1\r\n\r\n";
  for (const std::string body :
       {"5\r\nhello\r\n0\r\n\r\n", "0\r\n\r\n", "A\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n",
        "3\r\n\r\n\r\r\n0\r\nExpires: never\r\nX-Y: z\r\n\r\n", "00010\r\n0123456789abcdef\r\n0\r\n\r\n"}) {
    const std::string bytes = body + next;
    for (size_t cut = 0; cut <= bytes.size(); ++cut) {
      ChunkedBody chunked;
      size_t used = chunked.Feed(std::string_view(bytes).substr(0, cut));
      EXPECT_EQ(chunked.ended(), cut >= body.size()) << body << " cut at " << cut;
      if (!chunked.ended()) used += chunked.Feed(std::string_view(bytes).substr(cut));
      EXPECT_TRUE(chunked.ended()) << body << " cut at " << cut;
      EXPECT_EQ(chunked.error(), "");
      EXPECT_EQ(used, body.size()) << body << " cut at " << cut;
    }
  }
}

// What Pistache 0.0.5 cannot read is an error, not an end: chunk extensions
// (RFC 9112 allows them; Pistache answered a plain-text 400) and what is not
// chunked at all.
TEST(ChunkedBody, WhatPistacheCannotReadIsAnError) {
  const std::string size = "chunked body: a chunk size is not a hexadecimal number followed by CRLF";
  const std::string extension = "chunked body: chunk extensions (';' after the size) are not read by this server";
  for (const auto& [bytes, error] : std::vector<std::pair<std::string, std::string>>{
           {"x\r\n", size},
           {"\r\n", size},
           {";a\r\n", size},
           {"5\nhello", size},
           {"5;name=value\r\nhello", extension},
           {"5 ;x\r\nhello", extension},
           {"5\r\nhello0\r\n\r\n", "chunked body: a chunk's data is not followed by CRLF"},
           {"00000000000000001\r\n", "chunked body: a chunk size of more than 16 hexadecimal digits"},
           {"0\r\nfield:\rx", "chunked body: a trailer line is not ended by CRLF"},
           {"0\r\nGET / HTTP/1.1\r\n", "chunked body: a trailer line has no ':'"}}) {
    ChunkedBody chunked;
    chunked.Feed(bytes);
    EXPECT_EQ(chunked.error(), error) << bytes;
    EXPECT_FALSE(chunked.ended()) << bytes;
  }
  ChunkedBody waiting;
  waiting.Feed("ffffffffffffffff\r\n");  // the largest size, without a limit: still reading its data
  EXPECT_EQ(waiting.error(), "");
  EXPECT_FALSE(waiting.ended());
}

// A chunk larger than what is left of the limit is refused from its size
// line, as soon as its digits say so: Pistache reserved a chunk's size as
// soon as it had read it (1 GiB for "40000000").
TEST(ChunkedBody, AChunkOverWhatIsLeftOfTheLimitIsA413FromItsSize) {
  auto too_large = [](int left) {
    return "chunked body: a chunk of more than the " + std::to_string(left) +
           " bytes left would take the body over the limit of 16 bytes (raise with --max-body-bytes)";
  };
  for (const auto& [bytes, left] : std::vector<std::pair<std::string, int>>{{"ffffffffffffffff\r\n", 16},
                                                                            {"40000000\r\n", 16},
                                                                            {"11\r\n", 16},
                                                                            {"8\r\n12345678\r\n9\r\n", 8},
                                                                            {"10\r\n0123456789abcdef\r\n1\r\n", 0}}) {
    ChunkedBody chunked(16);
    const size_t used = chunked.Feed(bytes);
    EXPECT_EQ(chunked.error(), too_large(left)) << bytes;
    EXPECT_EQ(chunked.error_status(), 413) << bytes;
    EXPECT_LT(used, bytes.size()) << bytes;  // it stops at the digit that passes the limit
  }
  // Up to the limit, exactly, in one chunk or several.
  for (const std::string bytes :
       {"10\r\n0123456789abcdef\r\n0\r\n\r\n", "8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n"}) {
    ChunkedBody chunked(16);
    std::string data;
    EXPECT_EQ(chunked.Feed(bytes, &data), bytes.size());
    EXPECT_TRUE(chunked.ended()) << bytes << ": " << chunked.error();
    EXPECT_EQ(data, "0123456789abcdef");
  }
}

TEST(ChunkedBody, TrailerFieldsHaveALimit) {
  ChunkedBody chunked;
  chunked.Feed("0\r\nX-Long: " + std::string(ChunkedBody::kMaxTrailerBytes, 'a'));
  EXPECT_EQ(chunked.error(), "chunked body: trailer fields over 65536 bytes");
  EXPECT_EQ(chunked.error_status(), 400);
}

TEST(RequestHead, ExpectsContinueOnlyWhenAsked) {
  auto expects = [](const std::string& fields) {
    return ParseRequestHead("POST / HTTP/1.1\r\n" + fields + "\r\n")->ExpectsContinue();
  };
  EXPECT_TRUE(expects("Expect: 100-continue\r\n"));
  EXPECT_TRUE(expects("expect: 100-Continue\r\n"));
  EXPECT_FALSE(expects("Host: x\r\n"));
  EXPECT_FALSE(expects("Expect: something-else\r\n"));
}

TEST(RequestHead, LinesItCannotReadAreSkipped) {
  const auto head = ParseRequestHead("GARBAGE\r\nno colon here\r\nContent-Length: 3\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->method, "");
  EXPECT_EQ(head->ContentLength(), 3U);
  EXPECT_EQ(head->unreadable_field, "no colon here");
}

TEST(RequestHead, KeepsFieldsAsPistacheReadsThem) {
  const auto head = ParseRequestHead("GET / HTTP/1.1\r\nHost:   x:80 \r\nX-Tab:\tv\r\nEmpty:\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  using Fields = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(head->fields, (Fields{{"Host", "x:80 "}, {"X-Tab", "\tv"}, {"Empty", ""}}));
  EXPECT_EQ(head->Field("host"), "x:80");  // by a lower-case name, trimmed
  EXPECT_EQ(head->Field("x-tab"), "v");
  EXPECT_EQ(head->Field("empty"), "");
  EXPECT_EQ(head->Field("cookie"), std::nullopt);
}

TEST(RequestHead, SyntaxErrorsAreNamed) {
  auto syntax = [](const std::string& head) { return ParseRequestHead(head + "\r\n")->SyntaxError(); };
  EXPECT_EQ(syntax("GET /healthz HTTP/1.1\r\nHost: x\r\n"), "");
  EXPECT_EQ(syntax("POST /v1/attributions?format=npz&n_steps=4 HTTP/1.0\r\n"), "");
  EXPECT_EQ(syntax("OPTIONS * HTTP/1.1\r\n"), "");
  EXPECT_EQ(syntax("GET /healthz HTTP/1.1\r\nX-Empty:\r\n"), "");  // an empty value is a value
  for (const char* line : {"garbage", "GET /healthz", "GET  /healthz HTTP/1.1", " GET /healthz HTTP/1.1",
                           "GET /healthz HTTP/1.1 ", "GET /a b HTTP/1.1", ""}) {
    EXPECT_EQ(syntax(std::string(line) + "\r\n"),
              "request line '" + std::string(line) + "' is not METHOD TARGET HTTP/1.1, one space apart")
        << line;
  }
  EXPECT_EQ(syntax("FOO / HTTP/1.1\r\n"), "method 'FOO': not one this server knows (GET, POST, HEAD, OPTIONS, ...)");
  EXPECT_EQ(syntax("get / HTTP/1.1\r\n").substr(0, 12), "method 'get'");  // methods are case-sensitive
  EXPECT_EQ(syntax("GET / HTTP/2.0\r\n"), "HTTP version 'HTTP/2.0': this server speaks HTTP/1.1 and 1.0");
  const std::string token = " is not a token (letters, digits and !#$%&'*+-.^_`|~)";
  EXPECT_EQ(syntax("POST / HTTP/1.1\r\nContent-Length : 5\r\n"), "header name 'Content-Length '" + token);
  EXPECT_EQ(syntax("GET / HTTP/1.1\r\n: x\r\n"), "header name ''" + token);
  EXPECT_EQ(syntax("GET / HTTP/1.1\r\nX(y): z\r\n"), "header name 'X(y)'" + token);
  EXPECT_EQ(syntax("GET / HTTP/1.1\r\nX-Odd_but.fine~!: z\r\n"), "");
  EXPECT_EQ(syntax("GET / HTTP/1\r\n"),
            "HTTP version 'HTTP/1': this server speaks HTTP/1.1 and 1.0");  // Pistache took it
  EXPECT_EQ(syntax("GET / http/1.1\r\n").substr(0, 12), "HTTP version");
  EXPECT_EQ(syntax("GET /healthz HTTP/1.1\r\nHost: x\r\nBadHeader\r\nAccept: */*\r\n"),
            "header line 'BadHeader' has no ':'");
  EXPECT_EQ(syntax("GET /healthz HTTP/1.1\r\nHost: x\r\n  folded: on\r\n"),
            "header line '  folded: on' continues the line before (obsolete line folding)");
  // Long lines are cut in the message.
  const std::string cut = syntax("GET /" + std::string(5000, 'a') + "\r\n");
  EXPECT_EQ(cut.substr(0, 27), "request line 'GET /aaaaaaaa");
  EXPECT_LT(cut.size(), 200U);
}

}  // namespace
}  // namespace intgrads
